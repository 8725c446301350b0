"""Traffic reports: the bytes/s between guests, from a driver's flow counters.

::

    every interval: driver.flow_counters() ── cumulative bytes per pair
        TrafficMeter: rate = (count - previous) / seconds between the samples
                      (a smaller count than before: its source restarted; count from 0)
        ──> link.report_traffic(host, {"interval_s", "pairs": [{"a", "b", "bytes_per_s"}]})

A host with no traffic sends one empty report (so the server forgets its old pairs at
once) and then nothing until traffic comes back; the server ignores reports older than
three intervals. Telemetry is best effort: a failed read or report is logged and tried
again at the next interval, and never ends the agent's session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from podium.agent._link import AgentError, ServerLink
from podium.drivers import DriverError, FlowSource

log = logging.getLogger("podium.agent.traffic")

Pair = tuple[str, str]

DEFAULT_INTERVAL = 10.0
MIN_INTERVAL, MAX_INTERVAL = 0.05, 3600.0
MAX_PAIRS = 4096  # the busiest pairs of one report (the server refuses more)


def check_interval(seconds: float) -> float:
    """``seconds`` if it is a sensible report interval, else ``ValueError`` saying why."""
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(
            f"traffic interval {seconds:g} s is out of range: "
            f"use {MIN_INTERVAL:g}..{MAX_INTERVAL:g}"
        )
    return seconds


class TrafficMeter:
    """Turns successive cumulative counters into rates."""

    def __init__(self) -> None:
        self._last: dict[Pair, int] | None = None
        self._at = 0.0

    def sample(self, counters: Mapping[Pair, int], now: float) -> tuple[float, dict[Pair, float]]:
        """``(seconds since the previous sample, {pair: bytes/s})``; pairs without new
        bytes are left out. The first sample only sets the baseline: ``(0.0, {})``."""
        last, at = self._last, self._at
        self._last, self._at = dict(counters), now
        if last is None or now <= at:
            return 0.0, {}
        elapsed = now - at
        rates: dict[Pair, float] = {}
        for pair, count in counters.items():
            before = last.get(pair, 0)
            # smaller than before: the counter restarted (set recreated, pair expired
            # and came back): what it holds now is all new
            delta = count - before if count >= before else count
            if delta > 0:
                key = (min(pair), max(pair))
                rates[key] = rates.get(key, 0.0) + delta / elapsed
        return elapsed, rates


def report_body(elapsed: float, rates: Mapping[Pair, float]) -> dict[str, Any]:
    """The body of ``POST /api/v1/agent/{host}/traffic``: the busiest pairs first."""
    top = sorted(rates.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_PAIRS]
    return {
        "interval_s": round(elapsed, 3),
        "pairs": [{"a": a, "b": b, "bytes_per_s": round(r, 3)} for (a, b), r in top],
    }


async def _forever() -> NoReturn:
    """Wait until cancelled (a long-lived task must not return)."""
    await asyncio.Future()
    raise AssertionError("unreachable: the future never completes")


async def traffic_loop(
    host: str,
    link: ServerLink,
    source: FlowSource,
    *,
    interval: float,
    clock: Callable[[], float],
    fenced: Callable[[], bool],
) -> None:
    """Report ``host``'s traffic every ``interval`` s until cancelled (see the module)."""
    meter = TrafficMeter()
    sent_pairs = True  # the first report goes out even when empty
    while True:
        await asyncio.sleep(interval)
        if fenced():
            continue
        try:
            counters = await source.flow_counters()
        except DriverError as err:
            log.warning("agent %s: cannot read traffic counters (%s)", host, err)
            continue
        if counters is None:
            log.info("agent %s: the driver measures no traffic; not reporting any", host)
            await _forever()
        elapsed, rates = meter.sample(counters, clock())
        if elapsed <= 0 or (not rates and not sent_pairs):
            continue
        try:
            await link.report_traffic(host, report_body(elapsed, rates))
        except AgentError as err:
            log.warning("agent %s: traffic report failed (%s)", host, err)
            continue
        sent_pairs = bool(rates)
