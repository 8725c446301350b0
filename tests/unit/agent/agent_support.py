"""A fake ServerLink (the server's agent endpoints, in memory) and a driver call log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from podium.agent import LeaseExpired, LinkError, Registration
from podium.drivers import GuestConfig, GuestInfo, SimDriver
from podium.model import Resources

CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)
SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 256}, "running": True}


class FakeLink:
    """The agent endpoints of docs/contracts.md, over dicts. Knobs simulate faults."""

    def __init__(self, *, ttl: int = 10, interval: float = 0.05) -> None:
        self.ttl = ttl
        self.interval = interval
        self.lease = 0
        self.registrations = 0
        self.keepalives = 0
        self.revision = 1
        self.assigned: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []  # watch lines, in revision order
        self.compacted = 0  # lines below this revision are gone
        self.changed = asyncio.Event()
        self.list_calls = 0
        self.watch_from: list[int] = []
        self.reports: list[dict[str, Any]] = []  # accepted reports, in order
        self.rejected: list[dict[str, Any]] = []
        self.reject: set[str] = set()
        self.down = False  # every call raises LinkError
        self.keepalive_down = False  # only keepalives fail
        self.register_down = False  # only registrations fail
        self.tokens: list[str] = []
        self.closed = False
        self._generation = 0  # bumped to drop open watch streams

    # -- knobs -------------------------------------------------------------------------

    def _bump(self, line: dict[str, Any]) -> None:
        self.revision += 1
        line["revision"] = self.revision
        self.log.append(line)
        self.changed.set()
        self.changed = asyncio.Event()

    def assign(self, guest: str, epoch: int = 1, *, uid: str | None = None, **spec: Any) -> None:
        a = {"guest": guest, "uid": uid or f"uid-{guest}", "epoch": epoch, "spec": {**SPEC, **spec}}
        self.assigned[guest] = a
        self._bump({"type": "PUT", "assignment": a})

    def unassign(self, guest: str) -> None:
        del self.assigned[guest]
        self._bump({"type": "DELETE", "guest": guest})

    def drop_streams(self) -> None:
        """Every open watch stream ends (as when a proxy closes idle connections)."""
        self._generation += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def compact(self) -> None:
        self.compacted = self.revision + 1
        self.drop_streams()

    def states(self, guest: str) -> list[str]:
        return [r["state"] for r in self.reports if r["guest"] == guest]

    # -- ServerLink ----------------------------------------------------------------------

    def _check(self) -> None:
        if self.down:
            raise LinkError("server unreachable (fake)")

    async def register(
        self,
        name: str,
        capacity: dict[str, Any],
        labels: dict[str, Any],
        driver: str,
        agent_version: str,
    ) -> Registration:
        self._check()
        if self.register_down:
            raise LinkError("register timed out (fake)")
        self.registrations += 1
        self.lease += 1
        token = "pdm_agent_fake" if self.registrations == 1 else None
        return Registration(token, self.lease, self.ttl, self.interval)

    async def keepalive(self, host: str, lease: int) -> int:
        self._check()
        if self.keepalive_down:
            raise LinkError("keepalive timed out (fake)")
        if lease != self.lease:
            raise LeaseExpired("lease expired: register again")
        self.keepalives += 1
        return self.ttl

    async def assignments(self, host: str) -> tuple[list[dict[str, Any]], int]:
        self._check()
        self.list_calls += 1
        return list(self.assigned.values()), self.revision

    async def watch_assignments(
        self, host: str, from_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        self._check()
        self.watch_from.append(from_revision)
        generation = self._generation
        if from_revision < self.compacted:
            yield {"type": "ERROR", "error": "compacted: list again"}
            return
        sent = from_revision - 1
        while generation == self._generation:
            changed = self.changed
            for line in self.log:
                if line["revision"] > sent:
                    sent = line["revision"]
                    yield line
            if generation != self._generation:
                return
            await changed.wait()

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        self._check()
        accepted, rejected = [], []
        for r in reports:
            a = self.assigned.get(r["guest"])
            if r["guest"] in self.reject or a is None or a["epoch"] != r["epoch"]:
                rejected.append({"guest": r["guest"], "reason": "stale epoch"})
                self.rejected.append(r)
            else:
                accepted.append(r["guest"])
                self.reports.append(r)
        return {"accepted": accepted, "rejected": rejected}

    async def close(self) -> None:
        self.closed = True


class LoggingDriver(SimDriver):
    """A SimDriver that logs every call, to assert operation sequences."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("name", "h1")
        kwargs.setdefault("capacity", CAPACITY)
        kwargs.setdefault("start_delay", (0.01, 0.02))
        kwargs.setdefault("stop_delay", (0.0, 0.01))
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str]] = []

    async def create(self, config: GuestConfig) -> GuestInfo:
        self.calls.append(("create", f"{config.name}@{config.epoch}"))
        return await super().create(config)

    async def start(self, name: str) -> GuestInfo:
        self.calls.append(("start", name))
        return await super().start(name)

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        self.calls.append(("stop", name))
        return await super().stop(name, timeout=timeout)

    async def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        await super().destroy(name)

    def ops(self, guest: str) -> list[str]:
        return [op for op, g in self.calls if g.split("@")[0] == guest]

    def running(self) -> list[str]:
        return sorted(n for n, g in self.snapshot().items() if g.state.value == "running")


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
