"""Controllers + leader election + sim agents over a real SQLite store, hunting double runs.

The agents talk to the state layer through ``StateLink``, a test-only twin of the agent
endpoints (the real agent never imports the store). A sampler checks invariant 1 (one
runner per guest) every few milliseconds while hosts crash or get partitioned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.agent import Agent, FenceReport, LeaseExpired, LinkError, Registration
from podium.controller import ControllerManager, LeaderElection
from podium.drivers import SimDriver
from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.scheduler import default_scheduler
from podium.state import ClusterState, StaleEpoch, keys, loads
from podium.store import Compacted, EventType, LeaseNotFound
from podium.store.sqlite import SQLiteStore

TTL = 2
CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)
REQ = {"cpu": 1, "memory_mib": 512, "iops": 10, "net_mbps": 10}


class StateLink:
    """The agent endpoints of docs/contracts.md, straight over ClusterState (tests only)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.down = False  # a partition: every call fails

    def _check(self) -> None:
        if self.down:
            raise LinkError("partitioned (test)")

    async def ping(self) -> None:
        self._check()

    async def register(
        self,
        name: str,
        capacity: dict[str, Any],
        labels: dict[str, Any],
        driver: str,
        agent_version: str,
        *,
        fenced: FenceReport | None = None,
    ) -> Registration:
        self._check()
        store = self.state.store
        old = await store.get(keys.host_status_key(name))
        lease = await store.grant(TTL)
        spec = HostSpec(Resources.from_dict(capacity), dict(labels))
        await self.state.register_host(
            HostName(name), spec, lease=lease.id, driver=driver, agent_version=agent_version
        )
        if old and loads(old.value).get("lease"):
            await store.revoke(int(loads(old.value)["lease"]))
        return Registration(None, lease.id, TTL, TTL / 4)

    async def keepalive(self, host: str, lease: int) -> int:
        self._check()
        try:
            ttl = await self.state.store.keepalive(lease)
            await self.state.record_keepalive(host, lease)
            return ttl
        except LeaseNotFound as err:
            raise LeaseExpired(str(err)) from err

    async def assignments(self, host: str) -> tuple[list[dict[str, Any]], int]:
        self._check()
        items, revision = await self.state.assignments(host)
        return [
            {"guest": a.guest, "uid": a.uid, "epoch": a.epoch, "spec": a.spec} for a in items
        ], revision

    async def watch_assignments(
        self, host: str, from_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        self._check()
        prefix = keys.assign_prefix(host)
        try:
            async for ev in self.state.store.watch(prefix, from_revision):
                self._check()
                if ev.type is EventType.PUT:
                    yield {"type": "PUT", "assignment": loads(ev.kv.value), "revision": ev.revision}
                else:
                    yield {
                        "type": "DELETE",
                        "guest": ev.kv.key[len(prefix) :],
                        "revision": ev.revision,
                    }
        except Compacted as err:
            yield {"type": "ERROR", "error": str(err)}

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        self._check()
        accepted, rejected = [], []
        for r in reports:
            try:
                await self.state.report_guest_status(
                    host, r["guest"], r["epoch"], GuestState(r["state"]), r["message"]
                )
                accepted.append(r["guest"])
            except StaleEpoch as err:
                rejected.append({"guest": r["guest"], "reason": str(err)})
        return {"accepted": accepted, "rejected": rejected}

    async def close(self) -> None:
        pass


class Host:
    def __init__(self, name: str, state: ClusterState) -> None:
        self.name = name
        self.link = StateLink(state)
        self.driver = SimDriver(name=name, capacity=CAPACITY, start_delay=(0.05, 0.1))
        self.agent = Agent(name, self.link, self.driver, capacity=CAPACITY, labels={"rack": name})
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{name}")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class DoubleRunSampler:
    """Invariant 1: no guest uid runs on two hosts at the same instant."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.samples = 0
        self.doubles: list[str] = []

    async def run(self) -> None:
        while True:
            seen: dict[str, str] = {}
            for h in self.hosts:
                for uid in h.driver.running_uids():
                    if uid in seen:
                        self.doubles.append(f"{uid} on {seen[uid]} and {h.name}")
                    seen[uid] = h.name
            self.samples += 1
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, n: int
) -> AsyncIterator[tuple[ClusterState, list[Host], DoubleRunSampler]]:
    store = SQLiteStore(tmp_path / "podium.db", sweep_interval=0.05, poll_interval=0.05)
    state = ClusterState(store)
    election = LeaderElection(store, ttl=2, identity="test-server")
    hosts: list[Host] = []
    tasks: list[asyncio.Task[None]] = []

    async def lead() -> None:
        async with election.lead() as leadership:
            await ControllerManager(state, default_scheduler(), host_ttl=TTL).run(leadership)

    try:
        tasks.append(asyncio.create_task(lead()))
        hosts.extend(Host(f"h{i}", state) for i in range(n))
        sampler = DoubleRunSampler(hosts)
        tasks.append(asyncio.create_task(sampler.run()))
        yield state, hosts, sampler
    finally:
        for h in hosts:
            await h.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def running_on(state: ClusterState) -> dict[str, tuple[str, int]]:
    items, _ = await state.list_objects(Kind.GUEST)
    return {
        g["name"]: (g["status"]["host"], g["status"]["epoch"])
        for g in items
        if g["status"]["state"] == GuestState.RUNNING.value
    }


async def wait_for(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def apps() -> list[Manifest]:
    return [
        Manifest(
            Kind.APP,
            "web",
            {"replicas": 3, "image": "tiny", "request": REQ, "spread": "host", "priority": 100},
        ),
        Manifest(Kind.APP, "batch", {"replicas": 8, "image": "tiny", "request": REQ}),
    ]


@pytest.mark.slow
async def test_crashed_host_guests_run_elsewhere_after_its_lease_expires(tmp_path: Path) -> None:
    async with cluster(tmp_path, 4) as (state, hosts, sampler):
        await state.apply(apps())

        async def all_running() -> bool:
            return len(await running_on(state)) == 11

        await wait_for(all_running, 15)
        before = await running_on(state)
        counts = {h.name: sum(1 for host, _ in before.values() if host == h.name) for h in hosts}
        victim = next(h for h in hosts if h.name == max(counts, key=lambda k: counts[k]))
        moving = sorted(g for g, (host, _) in before.items() if host == victim.name)
        await victim.stop()
        victim.driver.crash()  # the host dies with its guests
        loop = asyncio.get_running_loop()
        killed_at = loop.time()

        async def moved() -> bool:
            now = await running_on(state)
            return all(g in now and now[g][0] != victim.name for g in moving)

        await wait_for(moved, TTL + 10)
        failover = loop.time() - killed_at
        after = await running_on(state)
        assert all(after[g][1] == before[g][1] + 1 for g in moving)  # epoch + 1
        assert failover >= TTL * 0.5  # never before the lease could have expired

        async def rebound_events() -> bool:
            events, _ = await state.list_events()
            return any(e["reason"] == "GuestRebound" for e in events)

        await wait_for(rebound_events, 5)
        events, _ = await state.list_events()
        reasons = [e["reason"] for e in events]
        assert reasons.index("HostLost") < len(reasons) - 1 - reasons[::-1].index("GuestRebound")
        assert sampler.doubles == [] and sampler.samples > 100


@pytest.mark.slow
async def test_partitioned_host_fences_before_its_guests_restart_elsewhere(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as (state, hosts, sampler):
        await state.apply(apps()[1:])

        async def all_running() -> bool:
            return len(await running_on(state)) == 8

        await wait_for(all_running, 15)
        before = await running_on(state)
        victim = next(h for h in hosts if any(host == h.name for host, _ in before.values()))
        moving = sorted(g for g, (host, _) in before.items() if host == victim.name)
        victim.link.down = True  # partition: the agent is alive but cannot reach the server

        async def moved() -> bool:
            now = await running_on(state)
            return all(g in now and now[g][0] != victim.name for g in moving)

        await wait_for(moved, TTL + 10)
        assert victim.driver.running_uids() == []  # it fenced itself
        assert victim.agent.fence.fences == 1
        assert sampler.doubles == []
        victim.link.down = False  # the partition heals: the host rejoins, runs nothing stale

        async def rejoined() -> bool:
            view = await state.get_object(Kind.HOST, victim.name)
            return view["status"]["state"] == "ready"

        await wait_for(rejoined, 10)
        await asyncio.sleep(0.5)
        assert sampler.doubles == []
        assert all(host != victim.name for host, _ in (await running_on(state)).values())
