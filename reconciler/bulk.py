"""Building millions of long-lived objects without paying the cyclic garbage collector for it.

A catalog, an observation or a plan of a million instances is built from objects that hold no
reference cycles and live until the command ends. As they pile up, the collector would walk them
again and again (and in every full collection after): it is paused while they are built, then
they are frozen out of its sight; reference counting still frees them. Garbage from before is
collected first, so nothing cyclic is frozen with them.
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
