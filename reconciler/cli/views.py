"""Views: turn apply events into a human progress display or JSON lines."""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any

from reconciler.cli.common import progress_bar
from reconciler.engine.events import (
    ActionFinished,
    ActionProgress,
    Event,
    RunFinished,
    RunStarted,
    event_dict,
)
from reconciler.model.plan import human_bytes

if TYPE_CHECKING:
    from tqdm import tqdm

TRANSFERS = ("copy", "archive")  # the actions the byte progress bar counts


class JsonLinesView:
    """One JSON object per line on stdout, for scripts and log shippers."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(json.dumps(event_dict(event)) + "\n")
        self.out.flush()


class HumanView:
    """A byte progress bar on a terminal (none otherwise) and one line per finished action."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self._bar: tqdm[Any] | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(bytes=size):
                self._bar = progress_bar(
                    total=size, unit="B", unit_scale=True, desc="apply", disable=None
                )
            case ActionProgress(action=action, bytes=size) if (
                action.kind in ("copy", "archive") and self._bar
            ):
                self._bar.update(size)
            case ActionFinished():
                self._write(_finished_line(event))
            case RunFinished(summary=summary):
                if self._bar:
                    self._bar.close()
                self._write(_summary_line(summary))

    def _write(self, line: str) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)


def _finished_line(event: ActionFinished) -> str:
    action = event.action
    head = f"{action.kind} {action.study.of(action.study_uid)} -> {action.destination}"
    if event.ok:
        return f"  done    {head}: {event.message}"
    lines = [f"  {'UNKNOWN' if event.unknown else 'FAILED '} {head}: {event.message}"]
    # Failures are keyed by local SOP Instance UIDs, which a de-identified copy must not show.
    hidden = bool(action.study.deidentified_uid)
    for n, (uid, why) in enumerate(list(event.failures.items())[:5], start=1):
        lines.append(f"            {f'instance {n}' if hidden else uid}: {why}")
    if len(event.failures) > 5:
        lines.append(f"            ... and {len(event.failures) - 5} more")
    return "\n".join(lines)


def _summary_line(summary: dict[str, Any]) -> str:
    seconds = summary["seconds"]
    rate = human_bytes(summary["bytes_per_second"]) + "/s"
    verdicts = {"ok": "Apply complete", "unknown": "Apply finished with outcomes unknown"}
    verdict = verdicts.get(summary["outcome"], "Apply finished with failures")
    unknown = summary.get("actions_unknown", 0)
    return (
        f"\n{verdict}: {summary['actions_done']} actions done, {summary['actions_failed']} failed"
        f"{f', {unknown} unknown' if unknown else ''}; "
        f"{summary['instances_copied']} instances, {human_bytes(summary['bytes_copied'])} copied "
        f"in {seconds:.1f} s ({rate})."
    )
