"""Loading configs: merging folders, references, and errors that point at the right line."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.config.load import format_config, load_config
from reconciler.config.problems import ConfigError, ConfigProblem

VALID = """\
    site: st-elsewhere
    sources:
      inbox:
        path: incoming
        stable_after: 2m
    destinations:
      cloud:
        object: {url: "s3://bucket/main"}
      cold-archive:
        object: {url: "file:///mnt/archive"}
    policies:
      - name: everything
        copy_to: [cloud]
      - name: archive-old-ct
        select: {modality: [CT], older_than: 90d}
        copy_to: [cold-archive]
"""

SECRET = "s3cr3t-Value!"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def problems(path: Path) -> list[ConfigProblem]:
    return error_of(path).problems


def only_problem(path: Path) -> ConfigProblem:
    [problem] = problems(path)
    return problem


# --- valid configs ---------------------------------------------------------------------------


def test_a_valid_file_loads_with_its_folder_as_base(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler.yaml", VALID)

    loaded = load_config(path)

    assert loaded.config.site == "st-elsewhere"
    assert loaded.config.sources["inbox"].stable_after == timedelta(minutes=2)
    assert [p.name for p in loaded.config.policies] == ["everything", "archive-old-ct"]
    assert loaded.files == (path,)
    assert loaded.base_dir == tmp_path
    assert len(loaded.sha256) == 64
    assert loaded.state_path == tmp_path / ".reconciler" / "state.db"
    assert loaded.resolve_path(Path("incoming")) == tmp_path / "incoming"
    assert loaded.resolve_path(Path("/abs")) == Path("/abs")
    assert loaded.resolve_path(Path("~/x")) == Path.home() / "x"


def test_state_is_relative_to_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler.yaml", "state: var/state.db\n" + textwrap.dedent(VALID))

    assert load_config(path).state_path == tmp_path / "var" / "state.db"


def test_a_folder_is_merged_in_name_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        "10-policies.yml",
        """\
        policies:
          - name: second
            copy_to: [cloud]
        """,
    )
    write(
        tmp_path,
        "00-site.yaml",
        """\
        site: main
        sources:
          inbox: {path: in}
        destinations:
          cloud: {object: {url: "file:///backup"}}
        policies:
          - name: first
            copy_to: [cloud]
        """,
    )
    write(
        tmp_path,
        "20-more.yaml",
        """\
        sources:
          scanner: {path: scans}
        destinations:
          cold: {object: {url: "file:///cold"}}
        """,
    )
    write(tmp_path, "notes.txt", "not: [yaml")

    loaded = load_config(tmp_path)

    assert [f.name for f in loaded.files] == ["00-site.yaml", "10-policies.yml", "20-more.yaml"]
    assert loaded.base_dir == tmp_path
    assert set(loaded.config.sources) == {"inbox", "scanner"}
    assert set(loaded.config.destinations) == {"cloud", "cold"}
    assert [p.name for p in loaded.config.policies] == ["first", "second"]


def test_the_digest_covers_the_raw_text_not_resolved_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "c.yaml", VALID.replace("s3://bucket/main", "${env:URL}"))
    monkeypatch.setenv("URL", "s3://one")
    first = load_config(path).sha256
    monkeypatch.setenv("URL", "s3://two")
    assert load_config(path).sha256 == first

    path.write_text(path.read_text() + "# edited\n")
    assert load_config(path).sha256 != first


def test_the_decisions_digest_leaves_out_what_no_decision_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID)
    first = load_config(path)
    path.write_text(path.read_text() + "notifications: {failures_after: 5}\n# edited\n")
    quiet = load_config(path)
    assert quiet.sha256 != first.sha256 and quiet.decisions_sha256 == first.decisions_sha256
    path.write_text(path.read_text().replace("older_than: 90d", "older_than: 91d"))
    assert load_config(path).decisions_sha256 != first.decisions_sha256


# --- files and YAML --------------------------------------------------------------------------


def test_a_missing_path_and_an_empty_folder_are_errors(tmp_path: Path) -> None:
    assert only_problem(tmp_path / "nope.yaml").message == "no such file or folder"
    assert "no .yaml or .yml files" in only_problem(tmp_path).message


def test_a_syntax_error_points_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """\
        site: x
        sources:
          inbox: {path: in
        policies: []
        """,
    )

    problem = only_problem(path)

    assert (problem.file, problem.line) == (path, 4)
    assert "line 3" in problem.message  # where the unclosed mapping began


def test_an_impossible_date_points_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        VALID.replace("{modality: [CT], older_than: 90d}", "{study_date: {since: 2024-13-01}}"),
    )

    problem = only_problem(path)

    assert (problem.line, problem.column) == (15, 34)
    assert problem.message == "'2024-13-01' is not a valid date: month must be in 1..12"


def test_a_duplicate_key_is_reported_without_its_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        f"""\
        site: x
        sources:
          inbox:
            path: in
            path: {SECRET}
        """,
    )

    problem = only_problem(path)

    assert (problem.line, problem.column) == (5, 5)
    assert problem.message == "'path' is given twice in the same mapping"
    assert SECRET not in str(problem)


def test_an_empty_file_and_a_list_at_the_top_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "# nothing here yet\n")
    write(tmp_path, "b.yaml", "\n- site: x\n")

    empty, listed = problems(tmp_path)

    assert (empty.file.name, empty.line, empty.message) == ("a.yaml", 1, "the file is empty")
    assert (listed.file.name, listed.line) == ("b.yaml", 2)
    assert "must be a mapping" in listed.message


def test_a_name_in_two_files_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "site: x\nsources:\n  inbox: {path: in}\n")
    second = write(tmp_path, "b.yaml", "sources:\n  other: {path: o}\n  inbox: {path: in2}\n")

    problem = only_problem(tmp_path)

    assert (problem.file, problem.line, problem.column) == (second, 3, 3)
    assert problem.field == "sources → inbox"
    assert "already given at" in problem.message
    assert "a.yaml:3:3" in problem.message


def test_a_section_in_two_files_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "site: x\nsources:\n  inbox: {path: in}\n")
    write(tmp_path, "b.yaml", "apply: {parallel_studies: 2}\nsite: y\n")

    problem = only_problem(tmp_path)

    assert (problem.file.name, problem.line, problem.field) == ("b.yaml", 2, "site")
    assert "a.yaml:1:1" in problem.message


# --- validation ------------------------------------------------------------------------------


def test_an_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID.replace("stable_after: 2m", "stable_afer: 2m"))

    problem = only_problem(path)

    assert (problem.line, problem.column) == (5, 5)
    assert problem.field == "sources → inbox → stable_afer"
    assert problem.message == (
        "'stable_afer' is not a known setting here; did you mean 'stable_after'?"
    )


def test_an_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID + "    frobnicate: true\n")

    problem = only_problem(path)

    assert (problem.line, problem.field) == (17, "frobnicate")
    assert "known: site, state, sources" in problem.message


def test_a_bad_duration_names_the_policy(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler.yaml", VALID.replace("older_than: 90d", "older_than: 90x"))

    problem = only_problem(path)

    assert (problem.line, problem.column) == (15, 42)
    assert problem.field == "policies → 2nd (archive-old-ct) → select → older_than"
    assert problem.message.startswith("'90x' is not a duration")
    assert str(problem).startswith(
        f"{path}:15:42: policies → 2nd (archive-old-ct) → select → older_than: '90x'"
    )


@pytest.mark.parametrize("duration", ["86400000000000000s", "9999999999999d"])
def test_a_duration_too_long_is_a_located_error(tmp_path: Path, duration: str) -> None:
    # Found by the fuzz test: timedelta overflowed past pydantic as an OverflowError.
    text = VALID.replace("older_than: 90d", f"older_than: {duration}")
    problem = only_problem(write(tmp_path, "reconciler.yaml", text))
    assert problem.line == 15 and "longer than any duration" in problem.message


def test_a_missing_setting_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID.replace("path: incoming", "exclude: ['*.tmp']"))

    problem = only_problem(path)

    assert (problem.line, problem.column, problem.field) == (3, 3, "sources → inbox")
    assert problem.message == "'path' is required"


def test_a_bad_name_as_a_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID.replace("cold-archive:", "cold archive:", 1))

    problem = only_problem(path)

    assert (problem.line, problem.column, problem.field) == (9, 3, "destinations → cold archive")
    assert problem.message.startswith("a name must start with a letter or digit")


def test_a_union_of_wrong_types_gives_one_message(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", VALID.replace("{modality: [CT], older_than: 90d}", "{patient_id: 5}")
    )

    problem = only_problem(path)

    assert problem.line == 15
    assert problem.field == "policies → 2nd (archive-old-ct) → select → patient_id"
    assert problem.message == "should be text, a list or a mapping with equals, contains or regex"


def test_a_union_reports_the_member_that_fitted_best(tmp_path: Path) -> None:
    select = "{study_description: {equals: a, contains: b}, accession_number: {regx: x}}"
    path = write(tmp_path, "c.yaml", VALID.replace("{modality: [CT], older_than: 90d}", select))

    exactly_one, unknown = problems(path)

    assert exactly_one.field.endswith("select → study_description")
    assert exactly_one.message == "give exactly one of equals, contains or regex"
    assert unknown.field.endswith("select → accession_number → regx")
    assert unknown.message.endswith("did you mean 'regex'?")


def test_every_problem_is_reported_sorted_one_per_line(tmp_path: Path) -> None:
    text = VALID.replace("2m", "soon").replace("site: st-elsewhere", "site: -bad")
    path = write(tmp_path, "c.yaml", text + "    apply: {parallel_studies: 0}\n")

    error = error_of(path)

    assert [p.line for p in error.problems] == [1, 5, 17]
    assert str(error).splitlines() == [str(p) for p in error.problems]
    assert error.problems[2].message == "should be greater than or equal to 1"


def test_a_dangling_copy_to_points_at_the_name(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", VALID.replace("copy_to: [cloud]", "copy_to: [clod]"))

    problem = only_problem(path)

    assert (problem.line, problem.column) == (13, 15)
    assert problem.field == "policies → 1st (everything) → copy_to → 1st"
    assert problem.message == "'clod' is not a destination (known: cloud, cold-archive)"


def test_a_policy_from_a_later_file_is_counted_within_its_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", "policies:\n  - name: late\n    copy_to: [nowhere]\n")

    problem = only_problem(tmp_path)

    assert (problem.file.name, problem.line) == ("b.yaml", 3)
    assert problem.field == "policies → 1st (late) → copy_to → 1st"


# --- references ------------------------------------------------------------------------------


def test_references_are_resolved_embedded_and_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_HOST", "minio.local")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "secret").write_text("abc123\n")
    path = write(
        tmp_path,
        "c.yaml",
        """\
        site: x
        sources:
          inbox: {path: in}
        destinations:
          cloud:
            object:
              url: s3://bucket
              options:
                endpoint_url: http://${env:S3_HOST}:9000
                key: ${file:keys/secret}
                literal: $${env:S3_HOST} costs $$5
        """,
    )

    options = load_config(path).config.destinations["cloud"].object.options

    assert options == {
        "endpoint_url": "http://minio.local:9000",
        "key": "abc123",
        "literal": "${env:S3_HOST} costs $$5",
    }


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("${env:NOT_SET_ANYWHERE}", "environment variable 'NOT_SET_ANYWHERE' is not set"),
        ("${file:missing.key}", "cannot read"),
        ("${vault:db/password}", "'${vault:db/password}' is not a known reference"),
        ("http://${env:HOST", "is not closed"),
    ],
)
def test_a_reference_that_cannot_be_resolved_is_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, expected: str
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = write(tmp_path, "c.yaml", VALID.replace("path: incoming", f'path: "{reference}"'))

    problem = only_problem(path)

    assert (problem.line, problem.column, problem.field) == (4, 11, "sources → inbox → path")
    assert expected in problem.message


@pytest.mark.parametrize(
    ("original", "replacement"),
    [
        ("site: st-elsewhere", "site: ${env:SECRET}"),
        ("stable_after: 2m", "stable_after: ${env:SECRET}"),
        ("copy_to: [cloud]", 'copy_to: ["${env:SECRET}"]'),
        ("stable_after: 2m", 'stable_after: "2m${env:SECRET}"'),
        ("site: st-elsewhere", "site: x\n    apply: {parallel_studies: '${env:SECRET}'}"),
    ],
)
def test_a_secret_never_appears_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, original: str, replacement: str
) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    path = write(tmp_path, "c.yaml", VALID.replace(original, replacement))

    error = error_of(path)

    assert SECRET not in str(error)
    assert SECRET not in repr(error.problems)


@pytest.mark.parametrize(
    ("original", "replacement", "message"),
    [
        ("2m", "${env:SECRET}", "'${env:SECRET}' is not a duration"),
        ("[cloud]", '["${env:SECRET}"]', "'${env:SECRET}' is not a destination"),
    ],
)
def test_a_secret_in_a_message_is_shown_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, original: str, replacement: str, message: str
) -> None:
    # A valid name, so that only the check of where copy_to points fails.
    monkeypatch.setenv("SECRET", "hidden-name-42")
    path = write(tmp_path, "c.yaml", VALID.replace(original, replacement))

    problem = only_problem(path)

    assert problem.message.startswith(message)
    assert "hidden-name-42" not in str(problem)


# --- fmt -------------------------------------------------------------------------------------

UNFORMATTED = """\
    # the site
    site: x   # trailing
    sources:
        inbox:
            path: "${env:INBOX}"
            exclude:
            - '*.tmp'
    policies:
    - name: p
      copy_to: [cloud]   # flow style stays
"""

FORMATTED = """\
    # the site
    site: x   # trailing
    sources:
      inbox:
        path: "${env:INBOX}"
        exclude:
          - '*.tmp'
    policies:
      - name: p
        copy_to: [cloud] # flow style stays
"""


def test_fmt_check_reports_without_writing(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", UNFORMATTED)
    write(tmp_path, "d.yaml", FORMATTED)

    assert format_config(tmp_path, check=True) == [path]
    assert path.read_text() == textwrap.dedent(UNFORMATTED)


def test_fmt_rewrites_keeping_comments_and_references(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", UNFORMATTED)

    assert format_config(path, check=False) == [path]
    assert path.read_text() == textwrap.dedent(FORMATTED)


def test_fmt_is_idempotent(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", UNFORMATTED)
    write(tmp_path, "b.yaml", VALID)
    format_config(tmp_path, check=False)
    once = [path.read_text() for path in sorted(tmp_path.iterdir())]

    assert format_config(tmp_path, check=False) == []
    assert [path.read_text() for path in sorted(tmp_path.iterdir())] == once


def test_fmt_leaves_comment_only_files_alone(tmp_path: Path) -> None:
    write(tmp_path, "c.yaml", "# nothing yet\n")

    assert format_config(tmp_path, check=False) == []


def test_fmt_refuses_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "site: [x\n")

    with pytest.raises(ConfigError) as caught:
        format_config(path, check=False)

    assert caught.value.problems[0].file == path
    assert path.read_text() == "site: [x\n"


def test_input_the_yaml_parser_asserts_on_is_a_located_error(tmp_path: Path) -> None:
    # Found by the fuzz test: ruamel's comment handling raises AssertionError on this instead
    # of a YAML error. Loading skips comments (a located error); fmt keeps them (the assert).
    config = tmp_path / "reconciler.yaml"
    config.write_text("#\n> #")
    with pytest.raises(ConfigError) as loading:
        load_config(config)
    with pytest.raises(ConfigError) as formatting:
        format_config(config, check=True)
    assert [p.location for p in loading.value.problems] == [f"{config}:1:1"]
    assert "reconciler.yaml" in str(formatting.value) and "not valid YAML" in str(formatting.value)
