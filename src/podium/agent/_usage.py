"""Usage reports: what each guest uses, sent with its status for the rebalancer.

::

    every interval: driver.guest_usage() ── {guest: {cpu, memory_mib, iops, net_mbps}}
        UsageReports.offer: keep a guest's figures only if one dimension moved by more
                            than ``tolerance`` (relative) and its floor since last sent
        ──> wake the report loop ──> link.report(host, [... {"guest", "epoch", "state":
            "running", "message", "usage"}]) (the guest's last reported status, again)

Status writes go to the store, so they stay cheap: one measurement per ``interval``
(default 30 s), and a guest whose usage holds steady is not written at all. Usage rides
the agent's one report loop, so it never races a state change of the same guest; it is
sent only for guests last reported ``running`` (not while migrating out). The server
drops a guest's usage when its state, host or epoch changes; a state report accepted
here makes the next measurement go out whatever it is. Best effort: a failed read is
logged and tried at the next interval; a rejected usage report is dropped (the state
machinery deals with a binding that moved).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

from podium.drivers import DriverError, Usage, UsageSource, as_usage
from podium.model import Resources

log = logging.getLogger("podium.agent.usage")

JSON = dict[str, Any]

DEFAULT_INTERVAL = 30.0
MIN_INTERVAL, MAX_INTERVAL = 0.05, 3600.0
DEFAULT_TOLERANCE = 0.05  # a move of 5 % in one dimension is news
# absolute moves below these never count (an idle guest's noise is not a change)
FLOORS = {"cpu": 0.02, "memory_mib": 16.0, "iops": 5.0, "net_mbps": 0.1}


def check_interval(seconds: float) -> float:
    """``seconds`` if it is a sensible usage interval, else ``ValueError`` saying why."""
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(
            f"usage interval {seconds:g} s is out of range: use {MIN_INTERVAL:g}..{MAX_INTERVAL:g}"
        )
    return seconds


def moved(old: Mapping[str, float], new: Mapping[str, float], tolerance: float) -> bool:
    """Whether ``new`` differs from ``old`` by more than ``tolerance`` (relative to
    ``old``) and the floor of the dimension, in any dimension."""
    for dim, floor in FLOORS.items():
        before, now = old.get(dim, 0.0), new.get(dim, 0.0)
        delta = abs(now - before)
        if delta > floor and delta > tolerance * before:
            return True
    return False


class UsageReports:
    """Which guests' usage goes out with the next status report (event loop only)."""

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.tolerance = tolerance
        self._sent: dict[str, Usage] = {}  # what the server holds, as far as we know
        self._pending: dict[str, Usage] = {}

    @property
    def pending(self) -> dict[str, Usage]:
        return dict(self._pending)

    def offer(self, measured: Mapping[str, Resources | Mapping[str, float]]) -> bool:
        """Take a measurement; whether some guest's usage is now worth sending.

        Guests absent from it are forgotten. Raises ``ValueError`` (nothing taken) if
        the driver gave a negative or unknown figure.
        """
        fresh = {name: as_usage(value) for name, value in measured.items()}
        for table in (self._sent, self._pending):
            for gone in set(table) - set(fresh):
                del table[gone]
        for name, usage in fresh.items():
            sent = self._sent.get(name)
            if sent is None or moved(sent, usage, self.tolerance):
                self._pending[name] = usage
            else:
                self._pending.pop(name, None)  # came back near what the server holds
        return bool(self._pending)

    def attach(
        self,
        batch: list[JSON],
        last: Mapping[str, tuple[int, str, str]],
        *,
        skip: Container[str] = (),
    ) -> list[JSON]:
        """Add pending usage to ``batch``'s running entries (in place); return the
        usage-only entries of the other guests last reported running (not ``skip``)."""
        in_batch = set()
        for entry in batch:
            name = entry["guest"]
            in_batch.add(name)
            if entry["state"] == "running" and name in self._pending and name not in skip:
                entry["usage"] = dict(self._pending[name])
        extra: list[JSON] = []
        for name, usage in sorted(self._pending.items()):
            reported = last.get(name)
            if name in in_batch or name in skip or reported is None or reported[1] != "running":
                continue
            epoch, state, message = reported
            extra.append(
                {"guest": name, "epoch": epoch, "state": state, "message": message, "usage": usage}
            )
        return extra

    def settle(self, entries: Iterable[JSON], accepted: Iterable[str]) -> None:
        """After a report: accepted usage is what the server holds; an accepted state
        report without usage made the server drop it (send the next one whatever it is);
        a rejected usage is dropped."""
        ok = set(accepted)
        for entry in entries:
            name = entry["guest"]
            if "usage" in entry:
                if self._pending.get(name) == entry["usage"]:
                    del self._pending[name]
                if name in ok:
                    self._sent[name] = dict(entry["usage"])
            elif name in ok:
                self._sent.pop(name, None)


async def _forever() -> None:
    await asyncio.Future()


async def usage_loop(
    host: str,
    source: UsageSource,
    reports: UsageReports,
    *,
    interval: float,
    fenced: Callable[[], bool],
    wake: Callable[[], None],
) -> None:
    """Measure every ``interval`` s until cancelled; ``wake`` the report loop when some
    guest's usage is worth sending (see the module)."""
    while True:
        await asyncio.sleep(interval)
        if fenced():
            continue
        try:
            measured = await source.guest_usage()
        except DriverError as err:
            log.warning("agent %s: cannot measure guest usage (%s)", host, err)
            continue
        if measured is None:
            log.info("agent %s: the driver measures no usage; not reporting any", host)
            await _forever()
            return
        try:
            worth = reports.offer(measured)
        except ValueError as err:
            log.warning("agent %s: the driver measured nonsense (%s); ignored", host, err)
            continue
        if worth:
            wake()
