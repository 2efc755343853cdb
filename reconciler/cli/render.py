"""Plans as the terminal shows them: what `plan` prints and `apply` asks to approve."""

from __future__ import annotations

from reconciler.model.plan import LOCAL, Action, Plan, human_bytes, summary_counts


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def render_text(plan: Plan) -> str:
    lines: list[str] = []
    for problem in plan.problems:
        where = f"{problem.destination}: " if problem.destination else ""
        lines.append(f"{problem.severity.upper()}: {where}{problem.message}")
    if plan.problems:
        lines.append("")
    if plan.actions:
        lines.append("reconciler will perform the following actions:")
        lines.append("")
        for action in plan.actions:
            lines.extend(_render_action(action))
        lines.append("")
    if plan.waiting:
        lines.append("Waiting for these studies to be complete (not copied yet):")
        for waiting in plan.waiting:
            lines.append(f"  . study {waiting.study_uid} {waiting.study}: {waiting.reason}")
        lines.append("")
    if plan.deferred:
        lines.append("Deferred by schedule windows (planned again when they open):")
        for held_back in plan.deferred:
            lines.append(
                f"  . {held_back.kind} {held_back.study.of(held_back.study_uid)} "
                f"-> {held_back.destination}: {held_back.reason}"
            )
        lines.append("")
    local = [r for r in plan.retained if r.destination == LOCAL]
    if local:
        lines.append("Past keep_local but kept (not deleted):")
        for kept in local:
            lines.append(f"  . study {kept.study_uid} {kept.study}: {kept.reason}")
        lines.append("")
    remote = [r for r in plan.retained if r.destination != LOCAL]
    if remote:
        lines.append("Due for pruning but kept at their destination:")
        for kept in remote:
            lines.append(
                f"  . study {kept.study_uid} {kept.study} at {kept.destination}: {kept.reason}"
            )
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def _render_action(action: Action) -> list[str]:
    policies = f"  [{', '.join(action.policies)}]" if action.policies else ""
    study = action.study.of(action.study_uid)
    size = f"{_plural(action.count, 'file')}, {human_bytes(action.bytes)}"
    if action.kind == "copy":
        symbol = "~" if action.repair else "+"
        head = (
            f"  {symbol} copy   {study}, "
            f"{_plural(action.count, 'instance')}, {human_bytes(action.bytes)} "
            f"-> {action.destination}{policies}"
        )
    elif action.kind == "archive":
        head = (
            f"  {'~' if action.repair else '+'} archive {study}, {size} "
            f"-> {action.destination} (one bundle){policies}"
        )
    elif action.kind == "verify":
        head = f"  = verify {study} at {action.destination}{policies}"
    elif action.kind == "delete":
        head = f"  - delete {study}, {size} from local storage (to the trash){policies}"
    elif action.kind == "prune":
        head = f"  - prune  {study}, {size} from {action.destination}"
    elif action.kind == "sweep":
        where = action.destination
        head = f"  - sweep  partial copy of study {action.study_uid}, {size} at {where}"
    elif action.kind == "share":
        what = "mail only, the ZIP is stored" if action.repair else f"{size} in an encrypted ZIP"
        head = (
            f"  {'~' if action.repair else '+'} share  {study} ({what}) -> {action.destination}, "
            f"link mailed to {action.recipient}{policies}"
        )
    else:
        head = f"  - purge  {study}, {size} from the trash"
    description = f'"{action.study.description}": ' if action.study.description else ""
    return [head, f"           {description}{action.reason}"]


def summary_line(plan: Plan) -> str:
    counts = summary_counts(plan.actions)
    kept = f" {_plural(len(plan.retained), 'study', 'studies')} kept." if plan.retained else ""
    if plan.deferred:
        kept += f" {_plural(len(plan.deferred), 'action')} deferred by a window."
    if not plan.actions:
        tail = (
            f" {_plural(plan.in_sync, 'study copy', 'study copies')} in sync."
            if plan.in_sync
            else ""
        )
        waiting = (
            f" {_plural(len(plan.waiting), 'study', 'studies')} waiting." if plan.waiting else ""
        )
        return f"No changes.{tail}{waiting}{kept}"
    parts = [f"{_plural(counts['copies'], 'copy', 'copies')} ({human_bytes(counts['copy_bytes'])})"]
    if counts["archives"]:
        parts.append(
            f"{_plural(counts['archives'], 'archive')} ({human_bytes(counts['archive_bytes'])})"
        )
    if counts["shares"]:
        parts.append(_plural(counts["shares"], "share"))
    if counts["verifications"]:
        parts.append(_plural(counts["verifications"], "verification"))
    deletions = _plural(counts["deletions"], "deletion")
    if counts["deletions"]:
        deletions += f" ({human_bytes(counts['delete_bytes'])})"
    parts.append(deletions)
    if counts["purges"]:
        parts.append(_plural(counts["purges"], "trash purge"))
    if counts["prunes"]:
        parts.append(f"{_plural(counts['prunes'], 'prune')} ({human_bytes(counts['prune_bytes'])})")
    if counts["sweeps"]:
        parts.append(
            f"{_plural(counts['sweeps'], 'partial-copy sweep')} "
            f"({human_bytes(counts['sweep_bytes'])})"
        )
    return "Plan: " + ", ".join(parts) + "." + kept
