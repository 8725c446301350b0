"""Cluster events from the controllers, coalesced so bursts stay readable.

::

    record(kind, name, reason, msg, group=("Host", "h3")) ──> pending ──every interval──>
        per (reason, group): up to ``burst`` events written as they are; more become one
        summary: "GuestPlaced Host/h3: 40 guests: web-1, web-2, ... and 35 more"
        a reason over more than ``burst`` groups: one event for the cluster,
        "GuestPlaced Cluster/cluster: 12000 guests on 4800 hosts: h7 (9), ... and 4795 more"
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from podium.state import ClusterState, StateError
from podium.store import StoreError

log = logging.getLogger("podium.controller.events")


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: str
    name: str
    reason: str
    message: str
    warning: bool
    group: tuple[str, str] | None
    at: float  # when it was recorded (events are stamped then, not when flushed)


class EventRecorder:
    """Buffers events and writes them every ``interval`` seconds (best effort).

    Each event is stamped with the time it was recorded, so a flush does not reorder
    ``podium events`` against events the API writes directly.
    """

    def __init__(
        self, state: ClusterState, *, interval: float = 0.5, burst: int = 10, limit: int = 10_000
    ) -> None:
        self._state = state
        self._interval = interval
        self._burst = burst
        self._limit = limit
        self._pending: list[_Pending] = []
        self.dropped = 0
        self.written = 0

    def record(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        group: tuple[str, str] | None = None,
    ) -> None:
        """Queue an event. Events with the same ``reason`` and ``group`` may be summarised."""
        if len(self._pending) >= self._limit:
            self.dropped += 1
            return
        at = self._state.now()
        self._pending.append(_Pending(kind, name, reason, message, warning, group, at))

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[tuple[str, tuple[str, str] | None], list[_Pending]] = defaultdict(list)
        for event in pending:
            groups[(event.reason, event.group)].append(event)
        try:
            await self._summarise_wide(groups)
            for (reason, group), events in groups.items():
                if group is None or len(events) <= self._burst:
                    for e in events:
                        await self._state.emit(
                            e.kind, e.name, e.reason, e.message, warning=e.warning, at=e.at
                        )
                        self.written += 1
                    continue
                names = [e.name for e in events]
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                await self._state.emit(
                    group[0],
                    group[1],
                    reason,
                    f"{len(events)} guests: {shown}",
                    warning=any(e.warning for e in events),
                    at=events[0].at,
                )
                self.written += 1
        except (StoreError, StateError) as err:
            log.warning("could not write events (dropped): %s", err)

    async def _summarise_wide(
        self, groups: dict[tuple[str, tuple[str, str] | None], list[_Pending]]
    ) -> None:
        """A reason spread over more than ``burst`` groups in one flush (a thousand hosts
        each taking guests) becomes one event for the cluster, naming the busiest
        groups: per-group summaries would be thousands of writes a second, and no one
        reads them. Those groups are removed from ``groups``."""
        by_reason: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for reason, group in groups:
            if group is not None:
                by_reason[reason].append(group)
        for reason, wide in by_reason.items():
            if len(wide) <= self._burst:
                continue
            batches = [groups.pop((reason, g)) for g in wide]
            total = sum(len(b) for b in batches)
            busiest = sorted(zip(wide, batches, strict=True), key=lambda p: (-len(p[1]), p[0]))
            shown = ", ".join(f"{g[1]} ({len(b)})" for g, b in busiest[:5])
            kind = wide[0][0]
            await self._state.emit(
                "Cluster",
                "cluster",
                reason,
                f"{total} {batches[0][0].kind.lower()}s on {len(wide)} {kind.lower()}s: "
                f"{shown} and {len(wide) - 5} more",
                warning=any(e.warning for b in batches for e in b),
                at=min(e.at for b in batches for e in b),
            )
            self.written += 1
