"""Python's cyclic garbage collector, paused while a pass builds its objects (no I/O).

A pass builds hundreds of thousands of objects (10,000 services: the API's JSON or the state file,
then the snapshot, routes and config) and makes no reference cycle. The cyclic collector would walk
everything alive again and again while they are built: at 10,000 services that was more than half
of the pass, the JSON parse included. Reference counting still frees what a pass drops, and the
collector runs again once the block is done. The live pass and the offline commands both use it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
