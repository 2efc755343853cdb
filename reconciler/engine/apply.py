"""Carry out a plan: transfers in parallel, each result journaled, events for the views.

Worker threads only talk to destinations; everything that touches the state happens on the
calling thread as results come back, so the SQLite store keeps a single owner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reconciler.destinations import identity
from reconciler.destinations.base import (
    Archiver,
    Destination,
    DestinationRefused,
    DestinationUnavailable,
    ProgressCallback,
    Pruner,
    SendResult,
    VerifyResult,
)
from reconciler.engine.events import (
    ActionFinished,
    ActionProgress,
    ActionStarted,
    Event,
    RunFinished,
    RunStarted,
    stamp,
)
from reconciler.engine.trash import Trash, TrashError
from reconciler.model.plan import LOCAL, Action, Plan, human_bytes, summary_counts
from reconciler.planning.copies import StudyChanged, listing_files
from reconciler.planning.retention import CATALOG_SHRANK
from reconciler.state.store import StateStore
from reconciler.state.study_reader import StudyReader

if TYPE_CHECKING:  # engine.shares is imported only by a run that shares (mail, ZIP libraries)
    from reconciler.engine.shares import ShareExecutor, ShareJob, StoredZip

    # What a transfer's worker gives back; a str is why it did not start.
    Result = SendResult | VerifyResult | StoredZip | None | str

Emit = Callable[[Event], None]


def apply_plan(
    plan: Plan,
    destinations: Callable[[str], Destination],
    store: StateStore,
    emit: Emit,
    parallel_studies: int = 2,
    stop: threading.Event | None = None,
    trash: Trash | None = None,
    shares: ShareExecutor | None = None,
) -> dict[str, object]:
    """Run every action of ``plan``; returns the run summary (also emitted last).

    Once ``stop`` is set, actions not yet started are skipped (and planned again next time);
    those in flight finish, so nothing is left half-recorded. Removals (local deletions, trash
    purges, prunes at destinations) run last, and only when every copy and verification
    before them succeeded.
    """
    stop = stop or threading.Event()
    emit_lock = threading.Lock()
    counts = summary_counts(plan.actions)
    run_id = store.start_run("apply")

    def emit_safely(event: Event) -> None:
        with emit_lock:
            emit(stamp(event, run_id))

    started = time.monotonic()
    emit_safely(RunStarted(len(plan.actions), counts["copy_bytes"] + counts["archive_bytes"]))
    done = failed = unknown = skipped = instances = transferred = 0
    refused: dict[str, str] = {}  # destinations that refused us in this run, and why
    outcome = "interrupted"
    pool = ThreadPoolExecutor(parallel_studies, thread_name_prefix="apply")
    reader = StudyReader(store.path)  # the files of whole studies, listed as they start

    def listing(action: Action) -> Action:
        if action.whole_study is None:
            return action
        return listing_files(action, reader.study(action.study_uid))

    try:
        futures: dict[Future[Result], tuple[Action, int]] = {}
        jobs: dict[Future[Result], ShareJob] = {}
        removals = [a for a in plan.actions if _is_removal(a)]
        transfers = [a for a in plan.actions if not _is_removal(a)]
        for action in transfers:
            entry = _journal_start(store, run_id, action)
            job: ShareJob | None = None
            if action.kind == "share":
                if shares is None:
                    raise TypeError("a plan with shares needs a ShareExecutor to apply it")
                if isinstance(prepared := shares.prepare(action), ActionFinished):  # done already
                    store.journal_finish(entry, "done", None)
                    emit_safely(prepared)
                    done += 1
                    continue
                job = prepared
            future = pool.submit(
                _run_action, action, listing, destinations, emit_safely, stop, refused, shares, job
            )
            futures[future] = (action, entry)
            if job is not None:
                jobs[future] = job
        for future in as_completed(futures):
            action, entry = futures[future]
            if future.exception() is None and isinstance(why := future.result(), str):
                store.journal_finish(entry, "skipped", why)
                skipped += 1
                continue
            if future in jobs and shares is not None:
                finished = shares.finish(jobs[future], future, entry)
            else:
                finished = _record(future, action, entry, store)
            emit_safely(finished)
            if finished.ok:
                done += 1
            elif finished.unknown:
                unknown += 1
            else:
                failed += 1
            if action.kind in ("copy", "archive") and (finished.ok or finished.unknown):
                instances += action.count  # an unknown commitment: stored all the same
                transferred += action.bytes
            elif not finished.ok:
                kept_instances, kept_bytes = _kept_by_failed_copy(future)
                instances += kept_instances
                transferred += kept_bytes
        transfers_failed = failed + unknown  # an unknown copy proves nothing either
        for action in removals:
            entry = _journal_start(store, run_id, action)
            why_not = (
                "a copy or verification in this run failed or is unknown"
                if transfers_failed
                else _not_starting(action, stop)
            )
            if why_not:
                store.journal_finish(entry, "skipped", why_not)
                skipped += 1
                continue
            emit_safely(ActionStarted(action))
            if action.kind in ("prune", "sweep"):
                finished = _run_removal(action, entry, store, destinations, emit_safely)
            else:
                finished = _run_local(action, entry, store, trash, destinations)
            emit_safely(finished)
            done, failed = (done + 1, failed) if finished.ok else (done, failed + 1)
        outcome = (
            "failed" if failed else "unknown" if unknown else "interrupted" if skipped else "ok"
        )
        if not any(p.code == CATALOG_SHRANK for p in plan.problems):
            store.record_catalog_size()
    finally:
        pool.shutdown(wait=outcome != "interrupted", cancel_futures=True)
        reader.close()
        elapsed = time.monotonic() - started
        summary: dict[str, object] = {
            "outcome": outcome,
            "actions_done": done,
            "actions_failed": failed,
            "actions_unknown": unknown,
            "actions_skipped": skipped,
            "instances_copied": instances,
            "bytes_copied": transferred,
            "seconds": round(elapsed, 3),
            "bytes_per_second": round(transferred / elapsed) if elapsed > 0 else 0,
        }
        store.finish_run(run_id, outcome, summary)
    emit_safely(RunFinished(summary))
    return summary


def _is_removal(action: Action) -> bool:
    return action.destination == LOCAL or action.kind in ("prune", "sweep")


def _journal_start(store: StateStore, run_id: int, action: Action) -> int:
    return store.journal_start(
        run_id,
        action.kind,
        action.study_uid,
        action.destination,
        action.count,
        action.bytes,
    )


def _not_starting(action: Action, stop: threading.Event) -> str | None:
    """Why an action that has not started yet must not start now."""
    if stop.is_set():
        return "stopping before it started"
    if action.open_until is not None and datetime.now(UTC) >= action.open_until:
        return "its schedule window closed before it started"
    return None


def _run_action(
    action: Action,
    listing: Callable[[Action], Action],
    destinations: Callable[[str], Destination],
    emit: Emit,
    stop: threading.Event,
    refused: dict[str, str],
    shares: ShareExecutor | None = None,
    job: ShareJob | None = None,
) -> Result:
    if (why := _not_starting(action, stop)) is not None:
        return why
    if (cause := refused.get(action.destination)) is not None:
        return f"{action.destination} refused us earlier in this run: {cause}"
    try:
        action = listing(action)
    except StudyChanged as exc:
        return str(exc)
    try:
        return _run_started(action, destinations, emit, shares, job)
    except DestinationRefused as exc:
        # Said once, by the action it ended; the others there are skipped, planned again.
        refused.setdefault(action.destination, str(exc))
        raise


def _run_started(
    action: Action,
    destinations: Callable[[str], Destination],
    emit: Emit,
    shares: ShareExecutor | None,
    job: ShareJob | None,
) -> Result:
    emit(ActionStarted(action))
    progress = _progress(action, emit)
    if shares is not None and job is not None:
        return shares.store_zip(job, progress)
    destination = destinations(action.destination)
    if action.kind == "copy":
        return destination.send(action, progress)
    if action.kind == "archive":
        if not isinstance(destination, Archiver):
            raise TypeError(f"{action.destination} cannot hold archive bundles")
        return destination.archive(action, progress)
    return destination.verify(action, progress)


def _progress(action: Action, emit: Emit) -> ProgressCallback:
    """Progress events for ``action`` that also carry its running total of bytes; a
    destination may report from several sending threads at once."""
    lock = threading.Lock()
    done = 0

    def progress(size: int) -> None:
        nonlocal done
        with lock:  # held while emitting, so the totals are emitted in order
            done += size
            emit(ActionProgress(action, size, done))

    return progress


def _kept_by_failed_copy(future: Future[Result]) -> tuple[int, int]:
    """Instances and bytes a failed copy still left at its destination, as the destination
    confirmed them (a peer that stored some instances before it went away keeps those)."""
    if future.exception() is None and isinstance(result := future.result(), SendResult):
        return result.sent, result.bytes
    return 0, 0


def _record(
    future: Future[Result],
    action: Action,
    entry: int,
    store: StateStore,
) -> ActionFinished:
    try:
        result = future.result()
    except Exception as exc:
        # A refusal names the destination and its cause itself; anything else, its kind too.
        message = (
            str(exc) if isinstance(exc, DestinationRefused) else f"{type(exc).__name__}: {exc}"
        )
        store.journal_finish(entry, "failed", message)
        return ActionFinished(action, False, message)
    if isinstance(result, SendResult):
        if result.committed is None:
            message = _failure_summary(action.count, result.failures, "failed to copy")
            store.journal_finish(entry, "failed", message)
            return ActionFinished(action, False, message, result.failures)
        # Read before the copy is recorded, which clears a failed verification of the study.
        checked_before = (
            store.last_verification(action.destination, action.study_uid)
            if result.verified and action.repair
            else None
        )
        store.record_study_stored(action.destination, action.study_uid, result.committed)
        if result.unconfirmed is not None:  # stored, so not sent again; not counted committed
            return _unconfirmed(store, entry, action, result.unconfirmed, f"sent {result.sent}")
        if result.verified:
            _record_verified_copy(store, action, checked_before)
        store.journal_finish(entry, "done", None)
        return ActionFinished(action, True, f"copied {result.sent} instances")
    if not isinstance(result, VerifyResult):  # shares are recorded by their executor
        raise TypeError(f"{action.kind} of {action.study_uid} returned {type(result).__name__}")
    if result.unknown is not None:
        return _unconfirmed(store, entry, action, result.unknown, f"checked {result.checked}")
    store.record_verification(
        action.destination, action.study_uid, datetime.now(UTC), result.corrupt
    )
    if result.corrupt:
        message = _failure_summary(result.checked, result.corrupt, "failed verification") + (
            "; they will be copied again by the next apply"
        )
        store.journal_finish(entry, "failed", message)
        return ActionFinished(action, False, message, result.corrupt)
    store.journal_finish(entry, "done", None)
    return ActionFinished(action, True, f"verified {result.checked} instances")


def _record_verified_copy(
    store: StateStore, action: Action, checked_before: tuple[datetime, frozenset[str]] | None
) -> None:
    """A copy verified as it was made (e.g. storage commitment) verifies the study, or, for
    a repair, what it sent: the study then counts verified as of the last check of the rest,
    if one concluded and everything it found bad was among what the repair sent."""
    if not action.repair:
        store.record_verification(action.destination, action.study_uid, datetime.now(UTC), ())
        return
    if checked_before is None:
        return  # the rest was never checked: a verification stays due
    at, bad = checked_before
    if bad <= {r.sop_uid for r in action.instances}:
        store.record_verification(action.destination, action.study_uid, at, ())


def _unconfirmed(
    store: StateStore, entry: int, action: Action, why: str, done: str
) -> ActionFinished:
    """A storage commitment that got no answer: recorded, loud, and nothing found bad."""
    store.record_unconfirmed(action.destination, action.study_uid, why)
    message = f"{done} instances; storage commitment unknown: {why}"
    store.journal_finish(entry, "failed", message)
    return ActionFinished(action, False, message, unknown=True)


def _run_local(
    action: Action,
    entry: int,
    store: StateStore,
    trash: Trash | None,
    destinations: Callable[[str], Destination],
) -> ActionFinished:
    def failed(message: str) -> ActionFinished:
        store.journal_finish(entry, "failed", message)
        return ActionFinished(action, False, message)

    if trash is None:
        return failed("no trash was given for local actions")
    now = datetime.now(UTC)
    try:
        if action.kind == "purge":
            freed = trash.purge(action.instances)
            store.journal_finish(entry, "done", None)
            return ActionFinished(action, True, f"purged {human_bytes(freed)} from the trash")
        if action.valid_until is None or now > action.valid_until:
            return failed(
                "the verified copies this deletion relied on are no longer recent enough; "
                "it is planned again with fresh observations"
            )
        for evidence in action.evidence:
            # The copy was seen, maybe minutes ago: is its destination still the same one?
            identity.recheck(destinations(evidence.destination))
        moved = trash.put(action.study_uid, action.study, action.instances, now)
    except (TrashError, OSError, DestinationUnavailable) as exc:
        return failed(str(exc))
    store.forget_files(action.study_uid, moved)
    # Our own deletion is no shrink: even if this run dies now, the next must not read it so.
    store.record_catalog_size()
    store.journal_finish(entry, "done", None)
    return ActionFinished(action, True, f"moved {len(moved)} files to the trash")


def _run_removal(
    action: Action,
    entry: int,
    store: StateStore,
    destinations: Callable[[str], Destination],
    emit: Emit,
) -> ActionFinished:
    """A prune (our copy of a study) or a sweep (a partial copy) at a destination."""
    try:
        destination = destinations(action.destination)
        if not isinstance(destination, Pruner):
            raise TypeError(f"{action.destination} cannot remove copies")
        remove = destination.prune if action.kind == "prune" else destination.sweep
        freed = remove(action, _progress(action, emit))
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        store.journal_finish(entry, "failed", message)
        return ActionFinished(action, False, message)
    if action.kind == "prune":
        store.record_study_removed(action.destination, action.study_uid)
        done = f"removed its copy ({human_bytes(freed)})"
    else:
        store.record_partial_copy_swept(action.destination, action.study_uid)
        done = f"removed the partial copy ({human_bytes(freed)})"
    store.journal_finish(entry, "done", None)
    return ActionFinished(action, True, done)


def _failure_summary(total: int, failures: dict[str, str], what: str) -> str:
    first_uid, first_reason = next(iter(failures.items()))
    return f"{len(failures)} of {total} instances {what} (first: {first_uid}: {first_reason})"
