"""Plan lines and apply logs about de-identified copies show no original identifier."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli.render import render_text
from reconciler.cli.views import HumanView, JsonLinesView
from reconciler.config.model import Config
from reconciler.demo.synth import GeneratedStudy, generate
from reconciler.engine.events import ActionFinished
from reconciler.model.observation import Observation
from reconciler.model.plan import Action, Plan
from reconciler.planning.copies import listing_files
from reconciler.planning.planner import make_plan
from reconciler.sources.scan import SourceFolder, scan_sources
from reconciler.state.store import StateStore
from reconciler.transforms.pseudonyms import new_uid

SECRET = "a-site-secret-of-32-characters!!"
DESCRIPTION = "Knee MRI DOE^JANE"


@pytest.fixture
def planned(tmp_path: Path) -> tuple[GeneratedStudy, Plan]:
    inbox = tmp_path / "inbox"
    [study] = generate(
        inbox, studies=1, series_per_study=1, instances_per_series=2, matrix=16,
        modalities=["CT"], study_description=DESCRIPTION,
    )  # fmt: skip
    config = Config.model_validate(
        {
            "site": "site-a",
            "sources": {"inbox": {"path": str(inbox), "stable_after": "0s"}},
            "destinations": {
                "backup": {"object": {"url": (tmp_path / "backup").as_uri()}},
                "teaching": {
                    "object": {"url": (tmp_path / "teaching").as_uri()},
                    "anonymize": {"profile": "ps3.15-basic", "secret": SECRET},
                },
            },
            "policies": [{"name": "all", "copy_to": ["backup", "teaching"]}],
        }
    )
    store = StateStore(tmp_path / "state.db")
    scan_sources(store, [SourceFolder("inbox", inbox)])
    now = datetime.now(UTC)
    observations = {name: Observation(name, now, 1, ok=True) for name in ("backup", "teaching")}
    catalog = store.load_catalog()
    plan = make_plan(config, catalog, observations, now)
    store.close()
    # With their files listed, as apply hands them to the destination.
    actions = tuple(listing_files(a, catalog.studies.get(a.study_uid)) for a in plan.actions)
    return study, replace(plan, actions=actions)


def identifiers(study: GeneratedStudy) -> list[str]:
    date = study.study_date
    return [study.study_uid, study.patient_id, DESCRIPTION, "DOE", date, f"{date[:4]}-{date[4:6]}"]


def action_to(plan: Plan, destination: str) -> Action:
    [action] = [a for a in plan.actions if a.destination == destination]
    return action


def test_a_plan_names_a_deidentified_copy_by_its_new_uid_only(
    planned: tuple[GeneratedStudy, Plan],
) -> None:
    study, plan = planned
    lines = render_text(plan).splitlines()
    teaching = lines.index(next(line for line in lines if line.endswith("-> teaching  [all]")))

    head, reason = lines[teaching : teaching + 2]

    assert f"study {new_uid(SECRET.encode(), study.study_uid)} CT (de-identified)" in head
    for identifier in identifiers(study):
        assert identifier not in head + reason
    # The plain copy is still shown as the administrator knows it.
    assert any(study.study_uid in line and "-> backup" in line for line in lines)
    assert any(DESCRIPTION in line for line in lines)


def test_apply_logs_of_a_deidentified_copy_show_no_original_identifier(
    planned: tuple[GeneratedStudy, Plan],
) -> None:
    study, plan = planned
    action = action_to(plan, "teaching")
    sop_uids = [ref.sop_uid for ref in action.instances]
    failed = ActionFinished(action, False, "1 of 2 failed", {sop_uids[0]: "refused (0xA700)"})
    human, json_lines = io.StringIO(), io.StringIO()

    HumanView(human)(failed)
    JsonLinesView(json_lines)(failed)

    for logged in (human.getvalue(), json_lines.getvalue()):
        assert new_uid(SECRET.encode(), study.study_uid) in logged
        assert "refused (0xA700)" in logged
        for identifier in [*identifiers(study), *sop_uids]:
            assert identifier not in logged, logged
