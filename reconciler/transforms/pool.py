"""Compression in worker processes: encoders hold the GIL for much of their work, threads don't
scale, and a CT study is hundreds of independent images.

Workers are spawned, not forked: the parent runs threads (transfers, pynetdicom), and forking a
threaded process is unsafe. A spawned worker re-imports the parent's ``__main__``, so entry
points must be guarded (reconciler/__main__.py is).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING

from reconciler.transforms.settings import Codec

if TYPE_CHECKING:
    from reconciler.transforms.compression import Compressed


class CompressionPool:
    """``submit(data, codec)`` runs ``compress`` in one of ``workers`` processes.

    Processes start on first use and are reused until ``close``; safe to submit from threads.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, data: bytes, codec: Codec) -> Future[Compressed]:
        # Imported on first use: numpy and pydicom's codecs slow every command's start.
        from reconciler.transforms.compression import compress

        if codec == "keep":
            # Nothing to encode: not worth a round trip of the bytes through a pipe.
            done: Future[Compressed] = Future()
            try:
                done.set_result(compress(data, codec))
            except Exception as exc:
                done.set_exception(exc)
            return done
        return self._pool().submit(compress, data, codec)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._executor

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> CompressionPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
