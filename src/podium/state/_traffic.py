"""Traffic between guests, as the agents measure it: one report per host, merged on read.

::

    agent of host H ──put_traffic(H, interval_s, pairs)──> /podium/traffic/<H>
        endpoints that are MACs are named through /podium/ipam/mac/<mac> (unknown MACs:
        a gateway, a host bridge — dropped); {"at": server time, "interval_s", "pairs"}
    read_traffic() ──> every report younger than 3 intervals ──> TrafficMatrix
        a pair seen by both hosts of a cross-host flow counts once: the larger rate

Vocabulary: a *pair* is two guest names in sorted order; its rate is the bytes/s of
both directions together. A *stale* report (older than :data:`STALE_INTERVALS` of its
own interval) is left out: its host stopped reporting (down, or no traffic left).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.state import _cluster, keys

JSON = dict[str, Any]
Pair = tuple[str, str]

STALE_INTERVALS = 3


def _is_mac(endpoint: str) -> bool:
    return ":" in endpoint  # guest names never hold ':'


async def _names(state: _cluster.ClusterState, macs: Iterable[str]) -> dict[str, str]:
    """MAC -> guest name, for the MACs the MAC index knows."""
    wanted = sorted(set(macs))
    kvs = await asyncio.gather(*(state.store.get(keys.mac_key(m)) for m in wanted))
    return {
        m: str(_cluster.loads(kv.value)["guest"]) for m, kv in zip(wanted, kvs, strict=True) if kv
    }


async def put_traffic(
    state: _cluster.ClusterState,
    host: str,
    interval_s: float,
    pairs: Iterable[tuple[str, str, float]],
) -> int:
    """Store ``host``'s report (replacing its previous one); return the pairs kept.

    ``pairs``: ``(a, b, bytes_per_s)`` with each end a guest name or a NIC's MAC. MACs
    are named through the MAC index; pairs with an unknown end, or one guest at both
    ends, are dropped; a pair given twice (two NICs) adds up.
    """
    given = [(a.lower() if _is_mac(a) else a, b.lower() if _is_mac(b) else b, r)
             for a, b, r in pairs]  # fmt: skip
    names = await _names(state, (e for a, b, _ in given for e in (a, b) if _is_mac(e)))
    merged: dict[Pair, float] = {}
    for a, b, rate in given:
        x, y = (names.get(a) if _is_mac(a) else a), (names.get(b) if _is_mac(b) else b)
        if x is None or y is None or x == y:
            continue
        pair = (min(x, y), max(x, y))
        merged[pair] = merged.get(pair, 0.0) + float(rate)
    value = {
        "at": state.now(),
        "interval_s": float(interval_s),
        "pairs": [{"a": a, "b": b, "bytes_per_s": r} for (a, b), r in sorted(merged.items())],
    }
    await state.store.put(keys.traffic_key(host), _cluster.dumps(value))
    return len(merged)


@dataclass(frozen=True, slots=True)
class PairRate:
    """One pair of the merged matrix: its rate, which hosts saw it, the newest report."""

    a: str
    b: str
    bytes_per_s: float
    hosts: tuple[str, ...]
    at: float

    def to_dict(self) -> JSON:
        return {"a": self.a, "b": self.b, "bytes_per_s": self.bytes_per_s,
                "hosts": list(self.hosts), "at": self.at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrafficMatrix:
    """Every fresh pair (busiest first) and each host's report time and freshness."""

    pairs: tuple[PairRate, ...] = ()
    reports: dict[str, JSON] = field(default_factory=dict)  # host -> {at, interval_s, stale}

    def rates(self) -> dict[Pair, float]:
        """``{(a, b): bytes/s}`` (what the scheduler reads)."""
        return {(p.a, p.b): p.bytes_per_s for p in self.pairs}

    def to_dict(self) -> JSON:
        return {
            "pairs": [p.to_dict() for p in self.pairs],
            "hosts": [{"host": h, **r} for h, r in sorted(self.reports.items())],
        }


def merge(reports: dict[str, JSON], now: float) -> TrafficMatrix:
    """Merge host reports: stale ones are left out; a pair takes its largest rate."""
    seen: dict[Pair, tuple[float, list[str], float]] = {}
    status: dict[str, JSON] = {}
    for host, report in sorted(reports.items()):
        at, interval = float(report.get("at", 0.0)), float(report.get("interval_s", 0.0))
        stale = now - at > STALE_INTERVALS * max(interval, 1e-3)
        status[host] = {"at": at, "interval_s": interval, "stale": stale}
        if stale:
            continue
        for p in report.get("pairs", []):
            pair = (str(p["a"]), str(p["b"]))
            rate, hosts, newest = seen.get(pair, (0.0, [], 0.0))
            seen[pair] = (max(rate, float(p["bytes_per_s"])), [*hosts, host], max(newest, at))
    rows = [PairRate(a, b, r, tuple(h), at) for (a, b), (r, h, at) in seen.items()]
    rows.sort(key=lambda p: (-p.bytes_per_s, p.a, p.b))
    return TrafficMatrix(tuple(rows), status)


async def read_traffic(state: _cluster.ClusterState) -> TrafficMatrix:
    """The merged matrix from every host's latest report (one range read)."""
    res = await state.store.range(keys.TRAFFIC)
    reports = {kv.key[len(keys.TRAFFIC) :]: _cluster.loads(kv.value) for kv in res.kvs}
    return merge(reports, state.now())
