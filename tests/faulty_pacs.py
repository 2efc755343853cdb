"""A misbehaving DICOM peer for tests: an in-memory PACS (C-STORE, and the series and image
level C-FIND that ``verify: instances`` asks) served by pynetdicom in the test process, whose
faults a test switches on and off while it runs::

    pacs.reject = True                          # A-ASSOCIATE-RJ for every association
    pacs.abort_at, pacs.aborts_left = 2, 1      # A-ABORT at an association's 2nd C-STORE, once
    pacs.stall, pacs.stalls_left = 3.0, None    # answer every C-STORE 3 s late
    pacs.answer = lambda ds: (0xA700, "disk full")  # the status (and comment) of each C-STORE
    pacs.abort_associations()                   # A-ABORT the associations open now

Only instances answered with success or a warning are kept, as a real PACS would.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

HOST = "127.0.0.1"
AE_TITLE = "FAULTY"
SUCCESS = (0x0000, "")
PENDING = 0xFF00


class FaultyPacs:
    def __init__(self, port: int) -> None:
        self.received: dict[str, Dataset] = {}  # SOP Instance UID -> dataset, as stored
        self.abort_at: int | None = None  # abort an association at its n-th C-STORE ...
        self.aborts_left: int | None = None  # ... this many times (None: every time)
        self.stall = 0.0  # seconds to wait before answering a C-STORE ...
        self.stalls_left: int | None = None  # ... this many times (None: every time)
        self.answer: Callable[[Dataset], tuple[int, str]] = lambda _: SUCCESS
        self.requested = 0  # association requests
        self.aborted = 0
        self._stores: Counter[Association] = Counter()  # C-STOREs per association
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ae = AE(ae_title=AE_TITLE)
        self._ae.supported_contexts = AllStoragePresentationContexts
        self._ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server = self._ae.start_server(
            (HOST, port),
            block=False,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_request),
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_C_FIND, self._on_find),
            ],
        )

    @property
    def reject(self) -> bool:
        return bool(self._ae.require_calling_aet)

    @reject.setter
    def reject(self, value: bool) -> None:
        # pynetdicom then rejects every association: a calling AE title nobody uses.
        self._ae.require_calling_aet = ["NOBODY-ALLOWED"] if value else []

    def close(self) -> None:
        self._closing.set()  # wakes stalled handlers, so shutdown does not wait for them
        self._server.shutdown()

    def abort_associations(self) -> None:
        """A-ABORT every open association, as a peer ending idle ones does."""
        for assoc in self._server.active_associations:
            assoc.abort()

    def behave(self) -> None:
        """Switch every fault off."""
        self.reject, self.abort_at, self.stall = False, None, 0.0
        self.answer = lambda _: SUCCESS

    # --- handlers (pynetdicom's threads) ----------------------------------------------------

    def _on_request(self, event: evt.Event) -> None:
        with self._lock:
            self.requested += 1

    def _on_store(self, event: evt.Event) -> int | Dataset:
        with self._lock:
            self._stores[event.assoc] += 1
            abort = self.abort_at == self._stores[event.assoc] and _take(self, "aborts_left")
            if abort:
                self.aborted += 1
            stall = self.stall if self.stall and _take(self, "stalls_left") else 0.0
        if abort:
            event.assoc.abort()
            return 0xA700  # never reaches the requestor: the association is gone
        if stall:
            self._closing.wait(stall)
        dataset = event.dataset
        code, comment = self.answer(dataset)
        if code == 0x0000 or code & 0xF000 == 0xB000:
            with self._lock:
                self.received[str(dataset.SOPInstanceUID)] = dataset
        status = Dataset()
        status.Status = code
        if comment:
            status.ErrorComment = comment
        return status

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        level = query.QueryRetrieveLevel
        with self._lock:
            held = list(self.received.values())
        matches = [
            ds
            for ds in held
            if ds.StudyInstanceUID == query.StudyInstanceUID
            and query.get("SeriesInstanceUID") in (None, "", ds.SeriesInstanceUID)
        ]
        if level == "SERIES":
            for series in sorted({ds.SeriesInstanceUID for ds in matches}):
                yield (
                    PENDING,
                    _identifier(
                        level, StudyInstanceUID=query.StudyInstanceUID, SeriesInstanceUID=series
                    ),
                )
        elif level == "IMAGE":
            for ds in matches:
                yield (
                    PENDING,
                    _identifier(
                        level,
                        StudyInstanceUID=ds.StudyInstanceUID,
                        SeriesInstanceUID=ds.SeriesInstanceUID,
                        SOPInstanceUID=ds.SOPInstanceUID,
                    ),
                )
        yield SUCCESS[0], None


def _take(pacs: FaultyPacs, budget: str) -> bool:
    """Whether a fault with this budget (None: unlimited) strikes now; spends one if so."""
    left = getattr(pacs, budget)
    if left is None:
        return True
    if left <= 0:
        return False
    setattr(pacs, budget, left - 1)
    return True


def _identifier(level: str, **keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


@contextmanager
def faulty_pacs(port: int) -> Iterator[FaultyPacs]:
    pacs = FaultyPacs(port)
    try:
        yield pacs
    finally:
        pacs.close()
