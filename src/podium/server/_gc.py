"""Garbage collection for a server that holds millions of long-lived objects.

CPython's full collection walks every tracked object, and runs each time the survivors
grew by a quarter: with the informer cache holding millions of records, a server
binding guests at full speed spent ~13% of its time in full collections, seconds each
at a million guests. The cache is plain data (no reference cycles), so walking it
again and again finds nothing.

:class:`FreezeSurvivors` moves what survives each full collection to the permanent
generation (``gc.freeze``), so the next full collections walk only newer objects.
Cyclic garbage among frozen objects would never be found, so every ``max_age`` seconds
it thaws everything and lets the next full collection walk the whole heap once: garbage
is still found, within a bounded time, at the cost of one complete pass per period.
(It does not count frozen objects: ``gc.get_freeze_count`` walks them all.)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_AGE = 300.0  # seconds between complete passes


class FreezeSurvivors:
    """A ``gc.callbacks`` hook; :meth:`install` it once, in the server's process."""

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._freeze, self._unfreeze = freeze, unfreeze
        self._since = clock()  # the last complete pass
        self._thawed = False
        self.complete_passes = 0

    def install(self) -> None:
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        if self._thawed:  # this pass walked everything
            self._thawed = False
            self.complete_passes += 1
            self._since = self._clock()
            self._freeze()
        elif self._clock() - self._since > self._max_age:
            self._unfreeze()  # the next full collection walks the whole heap
            self._thawed = True
        else:
            self._freeze()
