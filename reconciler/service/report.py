"""`reconciler report`: per-run statistics from the state's runs and journal.

What the OsiriX backup plugin exports (studies, instances, bytes, durations, speeds,
failures), per run and per destination, rendered as JSON, CSV (one row per run) or one
self-contained HTML page that opens in a browser with no network access.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from html import escape
from typing import Any, Literal

from reconciler.config.durations import parse_duration
from reconciler.model.plan import human_bytes
from reconciler.state.store import StateStore

REPORT_FORMAT_VERSION = 1
FIRST_ERRORS = 5  # enough to see what went wrong without flooding the report
Format = Literal["json", "csv", "html"]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2024-05-01`` (a UTC date) or a duration back from now such as ``7d`` or ``12h``."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        raise ValueError(
            f"--since '{text}' is neither a date (2024-05-01) nor a duration (7d, 12h)"
        ) from None


def build_report(store: StateStore, since: datetime | None = None) -> dict[str, Any]:
    runs = [_run_stats(run) for run in store.runs_since(since)]
    totals = {key: sum(r[key] for r in runs) for key in ("studies", "instances", "bytes")}
    totals["failures"] = sum(r["failures"] for r in runs)
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(),
        "since": since.isoformat() if since else None,
        "runs": runs,
        "totals": {"runs": len(runs), **totals},
    }


def _run_stats(run: Mapping[str, Any]) -> dict[str, Any]:
    journal: list[dict[str, Any]] = run["journal"]
    seconds = _duration(run)
    stats = {
        "id": run["id"],
        "command": run["command"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "outcome": run["outcome"] or "running",
        **_counts(journal),
        "seconds": seconds,
    }
    stats["bytes_per_second"] = round(stats["bytes"] / seconds) if seconds else None
    stats["destinations"] = {
        name: _counts(e for e in journal if e["destination"] == name)
        for name in sorted({e["destination"] for e in journal})
    }
    stats["first_errors"] = [
        {k: e[k] for k in ("kind", "study_uid", "destination", "error")}
        for e in journal
        if e["status"] == "failed"
    ][:FIRST_ERRORS]
    return stats


def _counts(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Copies and local deletions count once done; a failed action counts as one failure."""
    entries = list(entries)
    copied = [e for e in entries if e["kind"] == "copy" and e["status"] == "done"]
    return {
        "studies": len({e["study_uid"] for e in copied}),
        "instances": sum(e["instances"] for e in copied),
        "bytes": sum(e["bytes"] for e in copied),
        "verified": sum(1 for e in entries if e["kind"] == "verify" and e["status"] == "done"),
        "deleted": sum(1 for e in entries if e["kind"] == "delete" and e["status"] == "done"),
        "failures": sum(1 for e in entries if e["status"] == "failed"),
    }


def _duration(run: Mapping[str, Any]) -> float | None:
    """The apply's own timing when it recorded one, else finish minus start."""
    summary = run["summary"] or {}
    if "seconds" in summary:
        return float(summary["seconds"])
    if run["finished_at"] is None:
        return None
    started, finished = (datetime.fromisoformat(run[k]) for k in ("started_at", "finished_at"))
    return round((finished - started).total_seconds(), 3)


# --- renderers ----------------------------------------------------------------------------


def render(report: Mapping[str, Any], fmt: Format) -> str:
    return {"json": render_json, "csv": render_csv, "html": render_html}[fmt](report)


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1) + "\n"


CSV_COLUMNS = (
    "id",
    "command",
    "started_at",
    "finished_at",
    "outcome",
    "studies",
    "instances",
    "bytes",
    "verified",
    "deleted",
    "failures",
    "seconds",
    "bytes_per_second",
    "first_error",
)


def render_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for run in report["runs"]:
        first = run["first_errors"][0] if run["first_errors"] else None
        writer.writerow({**run, "first_error": _error_line(first) if first else ""})
    return out.getvalue()


def _error_line(error: Mapping[str, Any]) -> str:
    return f"{error['kind']} {error['study_uid']} -> {error['destination']}: {error['error']}"


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; } tr.interrupted td { background: #fff8e1; }
code { font-size: 12px; }
"""
_COUNT_HEADERS = ("studies", "instances", "size", "verified", "deleted", "failures")


def render_html(report: Mapping[str, Any]) -> str:
    """One page, inline CSS, no scripts or external assets; every value is escaped."""
    runs = report["runs"]
    since = f" since {report['since']}" if report["since"] else ""
    totals = report["totals"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>reconciler report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>reconciler report{_e(since)}</h1>",
        f"<p>Generated {_e(report['generated_at'])}: {_e(totals['runs'])} runs, "
        f"{_e(totals['studies'])} studies, {_e(totals['instances'])} instances, "
        f"{_e(human_bytes(totals['bytes']))} copied, {_e(totals['failures'])} failures.</p>",
        "<h2>Runs</h2>",
        _table(
            ["run", "command", "started", "outcome", *_COUNT_HEADERS, "duration", "speed"],
            [(_run_cells(r), r["outcome"]) for r in runs],
        ),
        "<h2>By destination</h2>",
        _table(
            ["run", "destination", *_COUNT_HEADERS],
            [
                (
                    [r["id"], name, *_count_cells(d)],
                    "failed" if d["failures"] else "",
                )
                for r in runs
                for name, d in r["destinations"].items()
            ],
        ),
        "<h2>Failures</h2>",
        _table(
            ["run", "action", "study", "destination", "error"],
            [
                (
                    [r["id"], e["kind"], _Code(e["study_uid"]), e["destination"], e["error"]],
                    "",
                )
                for r in runs
                for e in r["first_errors"]
            ],
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


class _Code(str):
    """A cell shown in monospace (UIDs)."""


def _run_cells(run: Mapping[str, Any]) -> list[object]:
    seconds, speed = run["seconds"], run["bytes_per_second"]
    return [
        run["id"],
        run["command"],
        run["started_at"],
        run["outcome"],
        *_count_cells(run),
        f"{seconds:.1f} s" if seconds is not None else "",
        f"{human_bytes(speed)}/s" if speed is not None else "",
    ]


def _count_cells(counts: Mapping[str, Any]) -> list[object]:
    return [
        counts["studies"],
        counts["instances"],
        human_bytes(counts["bytes"]),
        counts["verified"],
        counts["deleted"],
        counts["failures"],
    ]


def _table(headers: list[str], rows: list[tuple[list[object], str]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{_e(css)}">' + "".join(_cell(v) for v in cells) + "</tr>"
        for cells, css in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, _Code):
        return f"<td><code>{_e(value)}</code></td>"
    if isinstance(value, int | float):
        return f'<td class="n">{_e(value)}</td>'
    return f"<td>{_e(value)}</td>"


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)
