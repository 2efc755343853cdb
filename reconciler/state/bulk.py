"""Building millions of long-lived objects without paying the cyclic garbage collector for it.

A catalog, an observation or a plan of a million instances is built from objects that live until
the command ends. As they pile up, the collector would walk them again and again: it is paused
while they are built, then they are frozen out of its sight, so that no later collection walks
them either; reference counting still frees them. Garbage from before is collected first. The
code run inside must leave no reference cycles behind, since frozen garbage is never collected:
loading the state and planning leave none (tests/test_bulk.py).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def building() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
