"""SimTraffic: a traffic model shared by the simulated hosts of one process.

::

    SimTraffic(apps={("web", "db"): 2e6}, guests={("a", "b"): 5e5})
        attach(SimDriver h1), attach(SimDriver h2), ...     (SimDriver(traffic=model))
    h1.flow_counters() ─> for each running guest of h1, each running peer anywhere:
        counter[(guest, peer)] += rate(guest, peer) * seconds since h1 last asked

Rates are bytes/s between *each* pair of running guests: ``apps[(A, B)]`` for a guest of
app A and one of app B (a guest's app is its spec's ``app``; ``(A, A)`` is replicas
talking among themselves), ``guests[(x, y)]`` for two named guests (added to the app
rate). Both hosts of a pair count it, as real hosts do (the server de-duplicates).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from podium.drivers._flows import Pair
from podium.drivers._protocol import GuestConfig


class SimHost(Protocol):
    """What the model reads of a simulated host."""

    @property
    def name(self) -> str: ...

    def running_configs(self) -> list[GuestConfig]:
        """The configs of the guests running now (synchronous)."""
        ...


def _key(a: str, b: str) -> Pair:
    return (a, b) if a <= b else (b, a)


class SimTraffic:
    """Per-pair byte counters for simulated hosts. Thread-safe. See the module docstring.

    Raises ``ValueError`` for a negative rate.
    """

    def __init__(
        self,
        *,
        apps: Mapping[tuple[str, str], float] | None = None,
        guests: Mapping[tuple[str, str], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apps: dict[Pair, float] = {}
        self._guests: dict[Pair, float] = {}
        for table, given in ((self._apps, apps or {}), (self._guests, guests or {})):
            for (a, b), rate in given.items():
                if rate < 0:
                    raise ValueError(f"rate {rate} between {a} and {b} is negative: bytes/s >= 0")
                table[_key(a, b)] = float(rate)
        self._clock = clock
        self._hosts: dict[str, SimHost] = {}
        self._counters: dict[str, dict[Pair, float]] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def set_rate(self, a: str, b: str, rate: float, *, apps: bool = True) -> None:
        """Change the rate between apps (or guests, ``apps=False``) ``a`` and ``b`` from now."""
        if rate < 0:
            raise ValueError(f"rate {rate} between {a} and {b} is negative: bytes/s >= 0")
        with self._lock:
            (self._apps if apps else self._guests)[_key(a, b)] = float(rate)

    def attach(self, host: SimHost) -> None:
        """Count the traffic of ``host``'s guests (a SimDriver attaches itself)."""
        with self._lock:
            self._hosts[host.name] = host
            self._counters.setdefault(host.name, {})
            self._last.setdefault(host.name, self._clock())

    def rate(self, a: GuestConfig, b: GuestConfig) -> float:
        """Bytes/s between two running guests."""
        app_a, app_b = str(a.spec.get("app", "")), str(b.spec.get("app", ""))
        by_app = self._apps.get(_key(app_a, app_b), 0.0) if app_a and app_b else 0.0
        return by_app + self._guests.get(_key(a.name, b.name), 0.0)

    def counters(self, host: str) -> dict[Pair, int]:
        """Cumulative bytes per pair with a guest of ``host``, up to now."""
        with self._lock:
            hosts = list(self._hosts.values())
            now = self._clock()
            elapsed = max(0.0, now - self._last.get(host, now))
            self._last[host] = now
            counters = self._counters.setdefault(host, {})
        local = next((h.running_configs() for h in hosts if h.name == host), [])
        peers = [c for h in hosts for c in h.running_configs()]
        here = {g.name for g in local}
        if elapsed > 0:
            for g in local:
                for p in peers:
                    if p.name == g.name:
                        continue
                    rate = self.rate(g, p)
                    if rate > 0:
                        key = _key(g.name, p.name)
                        # a pair of two local guests is met twice: count it once
                        share = 0.5 if p.name in here else 1.0
                        counters[key] = counters.get(key, 0.0) + rate * elapsed * share
        return {pair: int(total) for pair, total in counters.items()}
