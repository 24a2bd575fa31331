"""Garbage collection for an edge that holds thousands of long-lived connections.

Why: CPython's full (generation 2) collection walks every tracked object, and with 10,000 open
overlays that is millions of them: bench.fanout saw 1-3 s full collections on the edge, and
each one stalls every watcher (3 of 24 draft actions delivered 2.4-5 s late). The full pass runs
whenever the objects that survived into the old generation have grown by a quarter since the
last one, which a rush of connecting viewers does again and again.

So, after each full collection, what survived it is frozen (`gc.freeze`): the next full
collection walks only what was created since, and a connection that has been open for a while
costs the collector nothing. Frozen objects are still freed by reference counting; only cycles
among them wait: every `thaw_seconds` the frozen objects are returned to the old generation
(`gc.unfreeze`) so that one full collection looks at everything again.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class FreezeSurvivors:
    """A `gc.callbacks` entry: freeze after each full collection, thaw every `thaw_seconds`."""

    def __init__(self, thaw_seconds: float = 600.0) -> None:
        self.thaw_seconds = thaw_seconds
        self.thawed_at = time.monotonic()
        self.freezes = 0
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = time.monotonic()
        if now - self.thawed_at >= self.thaw_seconds:
            # The next full collection (soon: everything thawed counts as new) sees it all.
            gc.unfreeze()
            self.thawed_at = now
            self.thaws += 1
        else:
            gc.freeze()
            self.freezes += 1


def install(thaw_seconds: float = 600.0) -> FreezeSurvivors:
    """Freeze what the process has built so far and every full collection's survivors from now
    on (see the module docstring); returns the installed callback."""
    gc.freeze()
    policy = FreezeSurvivors(thaw_seconds)
    gc.callbacks.append(policy)
    return policy
