"""Self-fencing in a thread: guests die before the host lease can expire.

::

    keepalive ok at t ──> fence.arm(t + ttl - safety_margin)
    watchdog thread, every tick:  now >= deadline ──> fenced.set(); driver.kill_all()
                                  while fenced     ──> driver.kill_all() again (closes races
                                                       with a start that was in flight)
    re-registered ──> fence.clear(); fence.arm(new deadline)

The check runs in a thread, not a coroutine, so a blocked event loop still fences.
One thread serves every agent of a process (hundreds of simulated hosts).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("podium.agent.watchdog")

Clock = Callable[[], float]


class Fence:
    """One agent's fencing state. Thread-safe; ``check`` is what the watchdog calls."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        kill_all: Callable[[], list[str]],
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._kill_all = kill_all
        self._notify = notify
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._fenced = False
        self.reason = ""
        self.fences = 0  # how many times this host fenced itself
        self.fired_at: float | None = None  # clock time of the current fence
        self.killed = 0  # guests the current fence killed (first sweep)

    def is_fenced(self) -> bool:
        """Whether the host is fenced now (a method: it changes under other threads)."""
        return self._fenced

    @property
    def deadline(self) -> float | None:
        return self._deadline

    def arm(self, deadline: float) -> None:
        """Guests must be dead by ``deadline`` (clock time) unless re-armed before."""
        with self._lock:
            self._deadline = deadline

    def disarm(self) -> None:
        with self._lock:
            self._deadline = None

    def clear(self) -> None:
        """Leave the fenced state (after registering again with a new lease)."""
        with self._lock:
            self._fenced = False
            self.reason = ""
            self.fired_at = None
            self.killed = 0

    def fire(self, reason: str) -> None:
        """Fence now: kill every guest and stay fenced until :meth:`clear`."""
        with self._lock:
            first = not self._fenced
            self._fenced = True
            if first:
                self.reason = reason
                self.fences += 1
                self.fired_at = self._clock()
            killed = self._kill_all()
            if first:
                self.killed = len(killed)
        if first:
            log.warning("%s fenced itself (%s): killed %d guest(s)", self.name, reason, len(killed))
            with contextlib.suppress(RuntimeError):  # the agent's loop is closed: none to wake
                self._notify()

    def check(self) -> None:
        """Fence if the deadline passed; while fenced, kill again whatever runs."""
        with self._lock:
            deadline, fenced = self._deadline, self._fenced
        if fenced:
            with self._lock:
                if self._fenced:
                    self._kill_all()
            return
        if deadline is not None and self._clock() >= deadline:
            late = self._clock() - deadline
            self.fire(f"no lease renewal for too long (deadline passed by {late:.2f} s)")


class Watchdog:
    """A daemon thread checking every registered :class:`Fence` every ``tick`` seconds.

    The thread starts with the first fence and stops when the last one is removed.
    """

    def __init__(self, *, tick: float = 0.05) -> None:
        self.tick = tick
        self._fences: set[Fence] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, fence: Fence) -> None:
        with self._lock:
            self._fences.add(fence)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="podium-watchdog", daemon=True
                )
                self._thread.start()

    def remove(self, fence: Fence) -> None:
        with self._lock:
            self._fences.discard(fence)
            thread = self._thread if not self._fences else None
            if thread is not None:
                self._stop.set()
                self._thread = None
        if thread is not None:
            thread.join(timeout=5 * self.tick + 1)

    def check_now(self) -> None:
        """One round of checks in the calling thread (tests use it for determinism)."""
        with self._lock:
            fences = list(self._fences)
        for fence in fences:
            try:
                fence.check()
            except Exception:  # a broken driver must not stop the fencing of others
                log.exception("fencing %s failed", fence.name)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick):
            self.check_now()


DEFAULT_WATCHDOG = Watchdog()
