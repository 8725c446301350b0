"""Live migration, backup and console capture between agents, through fake links.

Two agents (source h1, target h2) on fake hosts that share a :class:`Fabric`, and a
fake control plane that plays the server's part of the handshake. The fabric records
every moment a guest would run on two hosts at once (invariant 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from podium.agent import Agent, Watchdog
from podium.drivers import DriverGuestState
from tests.unit.agent.agent_support import (
    CAPACITY,
    Fabric,
    FakeControlPlane,
    FakeHost,
    FakeLink,
    LoggingDriver,
    MigratingHost,
    eventually,
)

S = DriverGuestState


def make_agent(name: str, link: FakeLink, driver: FakeHost, watchdog: Watchdog, **kw: Any) -> Agent:
    options: dict[str, Any] = {
        "migration_address": f"10.0.0.{name[-1]}",
        "resync_interval": 0.05,
        "report_interval": 0.01,
        "progress_interval": 0.05,
        "console_interval": 0.1,
        "max_backoff": 0.05,
    }
    options.update(kw)
    return Agent(
        name,
        link,
        driver,
        capacity=CAPACITY,
        watchdog=watchdog,
        **options,
    )


@contextlib.asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Pair:
    """Source h1 and target h2 with their links, drivers and agents; guest g on h1."""

    def __init__(self, watchdog: Watchdog, *, flip: bool = True, **kw: Any) -> None:
        self.fabric = Fabric()
        self.links = {"h1": FakeLink(), "h2": FakeLink()}
        self.hosts = {h: MigratingHost(h, self.fabric) for h in self.links}
        self.agents = {
            h: make_agent(h, self.links[h], self.hosts[h], watchdog, **kw) for h in self.links
        }
        self.cp = FakeControlPlane(self.links, flip=flip)
        self.links["h1"].assign("g")

    def state(self, host: str) -> DriverGuestState | None:
        return self.hosts[host].state("g")


async def test_live_migration_handshake_never_runs_two_copies(watchdog: Watchdog) -> None:
    p = Pair(watchdog)
    h1, h2 = p.links["h1"], p.links["h2"]
    p.hosts["h1"].steps = 12
    async with running(*p.agents.values()):
        await eventually(lambda: h1.states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.state("h2") is S.INCOMING)
        assert p.state("h1") is S.RUNNING  # the destination is paused, not running
        await eventually(lambda: p.cp.phases[-1] == "transferring")
        await eventually(lambda: h1.states("g")[-1:] == ["migrating"])
        await eventually(lambda: p.state("h2") is S.RUNNING)
        await eventually(lambda: h2.states("g")[-1:] == ["running"])
        await eventually(lambda: p.state("h1") is None)  # the source is forgotten
        await asyncio.sleep(0.2)  # several reconcile passes: nothing starts again on h1
    assert p.fabric.violations == []
    assert p.cp.phases == ["preparing", "transferring", "completed"]
    assert h2.migration_states() == ["ready"]
    assert h2.migration_reports[0]["uri"].startswith("tcp:10.0.0.2:")
    assert h2.migration_reports[0]["role"] == "target"
    source = h1.migration_states()
    assert source[-1] == "completed" and set(source[:-1]) == {"progress"}
    progress = [r for r in h1.migration_reports if r["state"] == "progress"]
    assert set(progress[-1]["progress"]) == {
        "status",
        "transferred",
        "remaining",
        "total",
        "dirty_rate",
        "expected_downtime_ms",
        "elapsed_ms",
    }
    assert h1.migration_reports[-1]["result"] == {
        "total_ms": 120.0,
        "downtime_ms": 3.0,
        "transferred": 12000,
    }
    # status: never "stopped" from the source, nothing from the target before the flip
    assert h1.states("g") == ["starting", "running", "migrating"]
    assert [(r["epoch"], r["state"]) for r in h2.reports] == [(2, "running")]
    assert h2.rejected == []
    assert p.hosts["h1"].ops("g") == ["create", "start", "migrate_out", "stop", "destroy"]
    assert p.hosts["h2"].ops("g") == ["prepare_incoming", "activate"]


async def test_prepare_failure_reports_failed_and_the_source_keeps_running(
    watchdog: Watchdog,
) -> None:
    p = Pair(watchdog)
    p.hosts["h2"].fail_prepare = "no free port"
    async with running(*p.agents.values()):
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.cp.phases[-1:] == ["failed"])
        await eventually(lambda: "g" not in p.hosts["h2"].guests)
        await asyncio.sleep(0.1)
    failed = p.links["h2"].migration_reports
    assert [(r["role"], r["state"]) for r in failed] == [("target", "failed")]
    assert "no free port" in failed[0]["message"]
    assert p.state("h1") is S.RUNNING
    assert "migrate_out" not in p.hosts["h1"].ops("g")
    assert p.fabric.violations == []


async def test_migrate_out_failure_keeps_the_source_and_destroys_the_incoming(
    watchdog: Watchdog,
) -> None:
    p = Pair(watchdog)
    p.hosts["h1"].fail_migrate = "connection reset by peer"
    async with running(*p.agents.values()):
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.cp.phases[-1:] == ["failed"])
        await eventually(lambda: "g" not in p.hosts["h2"].guests)
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
    final = p.links["h1"].migration_reports[-1]
    assert (final["role"], final["state"]) == ("source", "failed")
    assert final["message"] == "connection reset by peer"
    assert p.state("h1") is S.RUNNING
    assert p.links["h1"].states("g") == ["starting", "running", "migrating", "running"]
    assert p.hosts["h1"].ops("g").count("start") == 1  # kept running, never restarted
    assert p.hosts["h2"].ops("g") == ["prepare_incoming", "stop", "destroy"]
    assert p.fabric.violations == []


async def test_removed_target_assignment_destroys_the_incoming_guest(watchdog: Watchdog) -> None:
    p = Pair(watchdog)
    async with running(*p.agents.values()):
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        p.links["h1"].answer_migration = p.links["h2"].answer_migration = lambda r: {
            "accepted": True,
            "reason": "",
        }  # a control plane that never moves on: preparing times out
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.state("h2") is S.INCOMING)
        p.links["h2"].unassign("g")
        await eventually(lambda: "g" not in p.hosts["h2"].guests)
    assert p.hosts["h2"].ops("g") == ["prepare_incoming", "stop", "destroy"]
    assert p.state("h1") is S.RUNNING
    assert p.fabric.violations == []


async def test_cancelled_migration_stops_and_the_source_keeps_running(watchdog: Watchdog) -> None:
    p = Pair(watchdog)
    p.hosts["h1"].hold = asyncio.Event()  # the transfer never converges
    async with running(*p.agents.values()):
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["migrating"])
        p.cp.cancel()
        await eventually(lambda: p.cp.phases[-1:] == ["failed"])
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        await eventually(lambda: "g" not in p.hosts["h2"].guests)
    final = p.links["h1"].migration_reports[-1]
    assert final["state"] == "failed"
    assert final["message"] == "cancelled: cancelled by the control plane"
    assert p.state("h1") is S.RUNNING
    assert p.fabric.violations == []


async def test_migrated_away_guest_is_never_started_again_at_that_epoch(
    watchdog: Watchdog,
) -> None:
    p = Pair(watchdog, flip=False)  # the server is slow to flip the binding
    h1 = p.links["h1"]
    async with running(*p.agents.values()):
        await eventually(lambda: h1.states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: h1.migration_states()[-1:] == ["completed"])
        h1.relist()  # a re-listed assignment still says migrate, at epoch 1
        await eventually(lambda: h1.list_calls == 2)
        await asyncio.sleep(0.3)
        assert p.state("h1") is S.STOPPED
    assert p.hosts["h1"].ops("g").count("migrate_out") == 1
    # A new agent process on the same host: only the driver remembers. The server
    # may have missed the completion, so it asks the driver again and reports it.
    again = make_agent("h1", h1, p.hosts["h1"], watchdog)
    async with running(again):
        await eventually(lambda: h1.migration_states("source").count("completed") == 2)
        await asyncio.sleep(0.3)
        assert p.state("h1") is S.STOPPED
        h1.unassign("g")  # the server flips at last
        await eventually(lambda: p.state("h1") is None)
    assert p.hosts["h1"].ops("g").count("start") == 1
    assert p.hosts["h1"].ops("g").count("migrate_out") == 2
    completed = [r for r in h1.migration_reports if r["state"] == "completed"]
    assert completed[0] == completed[1]
    assert "stopped" not in h1.states("g")
    assert p.fabric.violations == []


async def test_a_handled_migration_id_is_not_run_again(watchdog: Watchdog) -> None:
    p = Pair(watchdog, flip=False)  # the failure is accepted, `migrate` stays a while
    h1 = p.links["h1"]
    p.hosts["h1"].fail_migrate = "stalled"
    async with running(*p.agents.values()):
        await eventually(lambda: h1.states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: h1.migration_states()[-1:] == ["failed"])
        h1.relist()  # the watch restarts from a fresh list
        await eventually(lambda: h1.list_calls == 2)
        await asyncio.sleep(0.3)
    assert p.hosts["h1"].ops("g").count("migrate_out") == 1
    assert h1.migration_states().count("failed") == 1
    assert p.hosts["h2"].ops("g").count("prepare_incoming") == 1


async def test_migration_without_support_or_address_is_refused_once(watchdog: Watchdog) -> None:
    fabric = Fabric()
    link = FakeLink()
    plain = FakeHost("h1", fabric, kind="sim")
    link.assign("g")
    link.assign("in", 2, extras={"incoming": {"id": "m2", "source": "h9"}})
    async with running(make_agent("h1", link, plain, watchdog)):
        await eventually(lambda: link.states("g")[-1:] == ["running"])
        link.assign("g", extras={"migrate": {"id": "m1", "to": "h2", "uri": "tcp:x:1"}})
        await eventually(lambda: len(link.migration_reports) == 2)
        link.relist()
        await eventually(lambda: link.list_calls == 2)
        await asyncio.sleep(0.2)
    by_id = {r["id"]: r for r in link.migration_reports}
    assert len(link.migration_reports) == 2
    assert by_id["m1"]["message"] == "driver sim cannot live-migrate guests"
    assert by_id["m2"]["message"] == "driver sim cannot receive live migrations"
    assert plain.state("g") is S.RUNNING and plain.state("in") is None

    link2 = FakeLink()
    host = MigratingHost("h2", fabric)
    link2.assign("in", 2, extras={"incoming": {"id": "m3", "source": "h9"}})
    async with running(make_agent("h2", link2, host, watchdog, migration_address=None)):
        await eventually(lambda: link2.migration_states() == ["failed"])
    assert "agent has no --migration-address" in link2.migration_reports[0]["message"]
    assert host.ops("in") == []


async def test_progress_reports_are_throttled(watchdog: Watchdog) -> None:
    p = Pair(watchdog, progress_interval=0.1)
    p.hosts["h1"].steps, p.hosts["h1"].step_delay = 40, 0.01  # a sample every 10 ms
    async with running(*p.agents.values()):
        await eventually(lambda: p.links["h1"].states("g")[-1:] == ["running"])
        p.cp.start("g", "h1", "h2")
        await eventually(lambda: p.cp.phases[-1:] == ["completed"], timeout=10)
    progress = [r for r in p.links["h1"].migration_reports if r["state"] == "progress"]
    assert 1 <= len(progress) <= 5  # 0.4 s of transfer, one report per 0.1 s at most
    transferred = [r["progress"]["transferred"] for r in progress]
    assert transferred == sorted(set(transferred))  # each a newer sample


async def test_backup_reports_running_progress_and_outcome(watchdog: Watchdog) -> None:
    fabric, link = Fabric(), FakeLink()
    host = MigratingHost("h1", fabric)
    host.steps, host.step_delay = 20, 0.01
    link.assign("g")
    async with running(make_agent("h1", link, host, watchdog)):
        await eventually(lambda: link.states("g")[-1:] == ["running"])
        backup = {"id": "b1", "mode": "incremental", "parent_path": "/backups/g/b0.qcow2"}
        link.assign("g", extras={"backup": backup})
        await eventually(lambda: link.backup_reports[-1:] != [] and _final(link))
        host.fail_backup = "disk full"
        link.assign("g", extras={"backup": {"id": "b2", "mode": "full"}})
        await eventually(lambda: link.backup_reports[-1]["id"] == "b2" and _final(link))
        link.relist()  # re-listed: b2 is still on the assignment, but handled
        await eventually(lambda: link.list_calls == 2)
        await asyncio.sleep(0.2)
    b1 = [r for r in link.backup_reports if r["id"] == "b1"]
    assert b1[0] == {"guest": "g", "id": "b1", "state": "running"}
    assert any("progress" in r for r in b1[1:-1])
    assert b1[-1] == {
        "guest": "g",
        "id": "b1",
        "state": "completed",
        "path": "/backups/g/b1.qcow2",
        "volumes": {},
        "mode": "incremental",
        "bytes": 2000,
    }
    b2 = [r for r in link.backup_reports if r["id"] == "b2"]
    assert b2[-1]["state"] == "failed" and b2[-1]["message"] == "disk full"
    assert host.ops("g").count("backup") == 2
    assert link.states("g") == ["starting", "running"]  # a backup does not disturb it


async def test_a_replica_backup_reaches_the_driver_and_its_volumes_the_report(
    watchdog: Watchdog,
) -> None:
    link, host = FakeLink(), MigratingHost("h1", Fabric())
    link.assign("g")
    backup = {
        "id": "r2",
        "mode": "incremental",
        "target": "replica",
        "parent_path": "/replica/g/root/r1.qcow2",
        "parent_volumes": {"db/data": "/replica/g/db+data/r1.qcow2"},
    }
    async with running(make_agent("h1", link, host, watchdog)):
        await eventually(lambda: link.states("g")[-1:] == ["running"])
        link.assign("g", extras={"backup": backup})
        await eventually(lambda: link.backup_reports[-1:] != [] and _final(link))
    [request] = host.backup_requests
    assert (request.target, request.parent_path, dict(request.parent_volumes)) == (
        "replica",
        "/replica/g/root/r1.qcow2",
        {"db/data": "/replica/g/db+data/r1.qcow2"},
    )
    final = link.backup_reports[-1]
    assert (final["state"], final["path"]) == ("completed", "/replica/g/r2.qcow2")
    assert final["volumes"] == {"db/data": "/replica/g/db+data/r2.qcow2"}


def _final(link: FakeLink) -> bool:
    return link.backup_reports[-1]["state"] in ("completed", "failed")


async def test_backup_without_driver_support_is_refused_once(watchdog: Watchdog) -> None:
    link = FakeLink()
    host = FakeHost("h1", Fabric(), kind="sim")
    link.assign("g", extras={"backup": {"id": "b1", "mode": "full"}})
    async with running(make_agent("h1", link, host, watchdog)):
        await eventually(lambda: len(link.backup_reports) == 1)
        await asyncio.sleep(0.2)
    assert link.backup_reports == [
        {"guest": "g", "id": "b1", "state": "failed", "message": "driver sim cannot back up guests"}
    ]


async def test_console_tail_is_pushed_when_changed_at_most_every_interval(
    watchdog: Watchdog,
) -> None:
    link, host = FakeLink(), MigratingHost("h1", Fabric())
    link.assign("g")
    link.assign("quiet")
    agent = make_agent("h1", link, host, watchdog, console_interval=0.1)
    async with running(agent):
        await eventually(lambda: link.states("g")[-1:] == ["running"])
        host.console_text["quiet"] = "login: "
        for i in range(60):  # the console changes every 10 ms for 0.6 s
            host.console_text["g"] = "boot\n" + "x" * 20000 + f"line {i}\n"
            await asyncio.sleep(0.01)
        link.console_down = True  # failures are logged, the session goes on
        await asyncio.sleep(0.25)
        assert agent.fence.fences == 0 and link.registrations == 1
    pushes = [(t, text) for t, guest, text in link.consoles if guest == "g"]
    times = [t for t, _ in pushes]
    assert len(pushes) >= 3
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(times))
    assert all(len(text.encode()) <= 16 * 1024 for _, text in pushes)
    assert pushes[-1][1].endswith("line 59\n") or pushes[-1][1].endswith("\n")
    quiet = [text for _, guest, text in link.consoles if guest == "quiet"]
    assert quiet == ["login: "]  # unchanged text is not pushed again


async def test_sim_hosts_migrate_there_and_back_with_one_runner(watchdog: Watchdog) -> None:
    """The same handshake on SimDrivers (the demo's hosts), sampled for double runs."""
    links = {"h1": FakeLink(), "h2": FakeLink()}
    sims = {
        h: LoggingDriver(name=h, migration_mib_s=2048.0, start_delay=(0.01, 0.01)) for h in links
    }
    agents = [make_agent(h, links[h], sims[h], watchdog) for h in links]
    links["h1"].assign("g")
    runners: list[int] = []

    async def sample() -> None:
        while True:
            runners.append(sum(len(s.running_uids()) for s in sims.values()))
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    try:
        async with running(*agents):
            await eventually(lambda: links["h1"].states("g")[-1:] == ["running"])
            there = FakeControlPlane(links)
            there.start("g", "h1", "h2")
            await eventually(
                lambda: sims["h2"].running() == ["g"] and "g" not in sims["h1"].snapshot()
            )
            await eventually(lambda: links["h2"].states("g")[-1:] == ["running"])
            back = FakeControlPlane(links)
            back.start("g", "h2", "h1", mid="m2")
            await eventually(
                lambda: sims["h1"].running() == ["g"] and "g" not in sims["h2"].snapshot()
            )
            await eventually(lambda: links["h1"].states("g")[-1:] == ["running"])
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    assert there.phases == back.phases == ["preparing", "transferring", "completed"]
    assert max(runners) == 1
    assert sims["h1"].snapshot()["g"].epoch == 3
    assert [(r["epoch"], r["state"]) for r in links["h1"].reports] == [
        (1, "starting"),
        (1, "running"),
        (1, "migrating"),
        (3, "running"),
    ]
    assert sims["h1"].starts == 1 and sims["h2"].starts == 0  # moved, never booted again
