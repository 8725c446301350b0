"""An independent checker of invariants 1 and 4 (DESIGN.md) while faults are injected.

::

    QEMU thread  (every ~100 ms): for each guest uuid, every QEMU with that -uuid and its
                 run state from its observe.sock  ──> two "running" at once: violation
    store thread (every ~500 ms): podium's guest list (status epoch, host, state)
                 ──> an epoch lower than one seen before for that guest: violation
                 ──> a guest whose apply was acknowledged is missing: violation
    wait_converged(names, bound): every guest running in the store, and exactly one QEMU
                 per guest, running (qemu driver)  ──> not within the bound: violation

The QEMU side asks QEMU itself (the observer monitor), never podium's agents or store.
Both threads are bounded by ``max_seconds``; violations carry wall-clock timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from podium.client import AsyncPodiumClient, ClientConfig
from tests.support.qemu_procs import run_states

QEMU_INTERVAL = 0.1
STORE_INTERVAL = 0.5
CALL_TIMEOUT = 10.0


def stamp(t: float) -> str:
    """``HH:MM:SS.mmmZ`` (UTC) of a ``time.time()`` value."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass
class Violation:
    at: float  # time.time()
    what: str

    def line(self) -> str:
        return f"{stamp(self.at)} {self.what}"


async def list_guests(config: ClientConfig) -> dict[str, dict[str, Any]]:
    """The guests podium knows, by name (one bounded API call)."""
    async with AsyncPodiumClient(config) as client:
        items, _ = await asyncio.wait_for(client.list("Guest"), CALL_TIMEOUT)
    return {g["name"]: g for g in items}


async def list_hosts(config: ClientConfig) -> dict[str, dict[str, Any]]:
    async with AsyncPodiumClient(config) as client:
        items, _ = await asyncio.wait_for(client.list("Host"), CALL_TIMEOUT)
    return {h["name"]: h for h in items}


@dataclass
class Checker:
    """Samples QEMUs and the store in two threads until stopped; collects violations."""

    config: ClientConfig
    qemu: bool = True  # sample QEMU processes (qemu driver)
    max_seconds: float = 3600.0
    violations: list[Violation] = field(default_factory=list)
    qemu_samples: int = 0
    store_samples: int = 0
    store_errors: int = 0
    running_seen: int = 0  # (sample, guest) pairs with a QEMU running: the check is not vacuous
    uuids: dict[str, str] = field(default_factory=dict)  # guest name -> uuid
    epochs: dict[str, int] = field(default_factory=dict)  # guest name -> highest epoch seen
    acknowledged: set[str] = field(default_factory=set)  # guests whose apply was acknowledged
    timeline: list[tuple[float, str]] = field(default_factory=list)  # QEMU state changes
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _last_seen: dict[str, tuple[tuple[int, str, bool], ...]] = field(default_factory=dict)

    def violate(self, what: str) -> None:
        with self._lock:
            self.violations.append(Violation(time.time(), what))

    def watch(self, name: str, uuid: str) -> None:
        with self._lock:
            self.uuids[name] = uuid

    # -- QEMU side -----------------------------------------------------------------------

    async def _qemu_sample(self) -> None:
        with self._lock:
            guests = dict(self.uuids)
        for name, uuid in guests.items():
            states = await run_states(uuid)
            seen = tuple((p.pid, s, p.incoming) for p, s in states)
            if self._last_seen.get(name) != seen:
                self._last_seen[name] = seen
                with self._lock:
                    self.timeline.append((time.time(), f"{name}: {seen}"))
            running = [(p.pid, str(p.cwd)) for p, s in states if s == "running"]
            self.running_seen += bool(running)
            if len(running) > 1:
                self.violate(f"guest {name} ({uuid}): {len(running)} QEMUs running {running}")
        self.qemu_samples += 1

    def _qemu_loop(self) -> None:
        async def loop() -> None:
            deadline = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                await self._qemu_sample()
                await asyncio.sleep(QEMU_INTERVAL)

        asyncio.run(loop())

    # -- store side ----------------------------------------------------------------------

    def _store_sample(self, guests: dict[str, dict[str, Any]]) -> None:
        lost = sorted(self.acknowledged - guests.keys())
        if lost:  # the chaos suite never deletes a guest: an acknowledged write is gone
            self.violate(f"acknowledged guests missing from the store: {lost}")
        for name, guest in guests.items():
            status = guest.get("status") or {}
            epoch = status.get("epoch")
            uuid = status.get("uuid")
            if uuid and self.qemu:
                self.watch(name, str(uuid))
            if not isinstance(epoch, int):
                continue
            with self._lock:
                before = self.epochs.get(name)
                if before is None or epoch > before:
                    self.epochs[name] = epoch
            if before is not None and epoch < before:
                self.violate(f"guest {name}: epoch went back from {before} to {epoch}")
        self.store_samples += 1

    def _store_loop(self) -> None:
        async def loop() -> None:
            deadline = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    self._store_sample(await list_guests(self.config))
                except Exception:  # the server may be down (a fault): try again
                    self.store_errors += 1
                await asyncio.sleep(STORE_INTERVAL)

        asyncio.run(loop())

    def sample_store_now(self) -> dict[str, dict[str, Any]]:
        """One store sample from the caller's thread (also checked for epochs)."""
        guests = asyncio.run(list_guests(self.config))
        self._store_sample(guests)
        return guests

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Checker:
        loops = [self._store_loop] + ([self._qemu_loop] if self.qemu else [])
        for loop in loops:
            thread = threading.Thread(target=loop, daemon=True, name=f"chaos-{loop.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            with contextlib.suppress(RuntimeError):
                thread.join(timeout=15)

    # -- liveness ------------------------------------------------------------------------

    def _qemu_converged(self, guests: dict[str, dict[str, Any]], names: set[str]) -> str:
        """Empty when every guest has exactly one QEMU and it runs; else what is off."""
        off = []
        for name in sorted(names):
            uuid = str(guests[name]["status"].get("uuid") or "")
            states = asyncio.run(run_states(uuid)) if uuid else []
            live = [(p.pid, s) for p, s in states if s != "gone"]
            if len(live) != 1 or live[0][1] != "running":
                off.append(f"{name}: {live}")
        return "; ".join(off)

    def wait_converged(
        self, names: set[str], hosts: set[str], bound: float
    ) -> tuple[float, dict[str, dict[str, Any]]]:
        """Wait until every guest runs (store and QEMU) and every host is ready.

        Returns (seconds it took, the guests); past ``bound`` records a liveness violation
        and returns (``bound``, the last guests seen).
        """
        start = time.monotonic()
        guests: dict[str, dict[str, Any]] = {}
        why = "no sample yet"
        while time.monotonic() - start < bound:
            try:
                guests = self.sample_store_now()
                host_states = {
                    n: h["status"].get("state") for n, h in asyncio.run(
                        list_hosts(self.config)).items()
                }  # fmt: skip
            except Exception as err:  # server restarting
                why = f"API: {err!r}"
                time.sleep(1)
                continue
            states = {n: guests[n]["status"].get("state") for n in names if n in guests}
            not_ready = {h: s for h, s in host_states.items() if h in hosts and s != "ready"}
            if len(states) != len(names) or set(states.values()) != {"running"}:
                why = f"guests {states}"
            elif not_ready or len(host_states) < len(hosts):
                why = f"hosts {not_ready or host_states}"
            elif self.qemu and (off := self._qemu_converged(guests, names)):
                why = f"QEMUs {off}"
            else:
                return time.monotonic() - start, guests
            time.sleep(1)
        self.violate(f"not converged within {bound:g} s after the faults stopped: {why}")
        return bound, guests
