"""The agent against a fake server link and a SimDriver: runs, stops, adopts, fences."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from podium.agent import Agent, AgentState, Watchdog, run_many
from podium.drivers import SimDriver
from tests.support.tasks import running as run_in_background
from tests.unit.agent.agent_support import CAPACITY, FakeLink, LoggingDriver, eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_agent(link: FakeLink, driver: SimDriver, watchdog: Watchdog, **kw: Any) -> Agent:
    return Agent(
        "h1",
        link,
        driver,
        capacity=CAPACITY,
        labels={"rack": "r1"},
        watchdog=watchdog,
        resync_interval=0.1,
        report_interval=0.01,
        **kw,
    )


def running(agent: Agent) -> contextlib.AbstractAsyncContextManager[asyncio.Task[Any]]:
    return run_in_background(agent.run())


async def test_starts_assigned_guests_and_reports_each_transition(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    tokens: list[str] = []
    agent = make_agent(link, driver, watchdog, on_host_token=tokens.append)
    link.assign("a")
    async with running(agent):
        await eventually(lambda: driver.running() == ["a"])
        link.assign("b")
        await eventually(
            lambda: link.states("a")[-1:] == ["running"] and link.states("b")[-1:] == ["running"]
        )
        assert link.states("a") == ["starting", "running"]
        assert link.states("b") == ["starting", "running"]
        assert driver.ops("a") == ["create", "start"]
        assert tokens == ["pdm_agent_fake"]
        assert list(agent.history)[:3] == [
            AgentState.STARTING,
            AgentState.REGISTERING,
            AgentState.ACTIVE,
        ]
        assert link.list_calls == 1  # b came through the watch, not a re-list
    assert agent.state is AgentState.STOPPED


async def test_stops_unassigned_guests_and_replaces_a_newer_epoch(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    link.assign("a")
    link.assign("b")
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: driver.running() == ["a", "b"])
        link.unassign("a")  # moved away or deleted
        link.assign("b", epoch=3)  # re-bound to this host at a newer epoch
        await eventually(lambda: driver.running() == ["b"] and driver.snapshot()["b"].epoch == 3)
        assert "a" not in driver.snapshot()
        assert driver.ops("a") == ["create", "start", "stop", "destroy"]
        assert driver.ops("b") == ["create", "start", "stop", "destroy", "create", "start"]
        assert [c for c in driver.calls if c[0] == "create"][-1] == ("create", "b@3")
        await eventually(
            lambda: link.reports[-1]["guest"] == "b" and link.reports[-1]["epoch"] == 3
        )


async def test_restart_adopts_running_guests_without_restarting_them(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    link.assign("a")
    link.assign("b")
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: driver.running() == ["a", "b"])
    assert driver.running() == ["a", "b"]  # stopping the agent leaves guests running
    link.unassign("b")  # while the agent was down
    driver.calls.clear()
    async with running(make_agent(link, driver, watchdog)) as _:
        await eventually(lambda: driver.running() == ["a"] and "b" not in driver.snapshot())
        await asyncio.sleep(0.2)
    assert driver.ops("a") == []  # adopted: never stopped, never started again
    assert driver.ops("b") == ["stop", "destroy"]
    assert driver.starts == 2
    assert link.registrations == 2


async def test_adopted_guests_survive_while_assignments_cannot_be_listed(
    watchdog: Watchdog,
) -> None:
    """Regression: a reconcile pass before the first list saw no assignments at all and
    destroyed every adopted guest (and would destroy incoming and migrated-away ones)."""
    link, driver = FakeLink(), LoggingDriver()
    link.assign("a")
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: driver.running() == ["a"])
    link.list_down = True
    driver.calls.clear()
    async with running(make_agent(link, driver, watchdog)):
        await asyncio.sleep(0.5)  # five resync intervals without a list
        assert driver.running() == ["a"]
        link.list_down = False
        await eventually(lambda: link.list_calls == 2)
        await asyncio.sleep(0.2)
    assert driver.ops("a") == []


async def test_fences_when_keepalives_fail_then_recovers(watchdog: Watchdog) -> None:
    clock = Clock()
    link, driver = FakeLink(ttl=10), LoggingDriver()
    link.assign("a")
    agent = make_agent(link, driver, watchdog, clock=clock, safety_margin=2.0)
    async with running(agent):
        await eventually(lambda: link.states("a")[-1:] == ["running"])
        link.keepalive_down = link.register_down = True
        clock.now += 7.9  # deadline is ttl - margin = 8 s after the last renewal was sent
        await asyncio.sleep(0.2)
        assert driver.running() == ["a"] and agent.state is AgentState.ACTIVE
        clock.now += 0.2
        await eventually(lambda: driver.running() == [])
        assert driver.snapshot()["a"].message == "killed (host fenced)"
        await eventually(lambda: agent.state is AgentState.REGISTERING)
        reports_when_fenced = len(link.reports)
        await asyncio.sleep(0.3)  # registration keeps failing; reports would be accepted
        assert len(link.reports) == reports_when_fenced  # a fenced host reports nothing
        assert driver.running() == []  # and runs nothing
        link.keepalive_down = link.register_down = False
        await eventually(lambda: driver.running() == ["a"])
        await eventually(lambda: link.states("a")[-1:] == ["running"])
    assert link.states("a") == ["starting", "running", "starting", "running"]
    assert agent.fence.fences == 1
    assert link.registrations == 2
    # the server hears of the fence when the host registers again: why, when, what died
    first, second = link.fence_reports
    assert first is None and second is not None
    assert second.reason.startswith("no lease renewal for too long") and second.killed == 1
    assert second.seconds_ago == 0.0  # the test clock stood still since the fence
    assert list(agent.history) == [
        AgentState.STARTING,
        AgentState.REGISTERING,
        AgentState.ACTIVE,
        AgentState.FENCED,
        AgentState.REGISTERING,
        AgentState.ACTIVE,
        AgentState.STOPPED,
    ]


async def test_the_fence_age_is_measured_once_a_server_answers(watchdog: Watchdog) -> None:
    """A registration's first connection may take seconds: the age sent is measured after
    it, so the server does not date the fence too late on its own timeline."""
    clock = Clock()
    link, driver = FakeLink(ttl=10), LoggingDriver()
    link.assign("a")
    agent = make_agent(link, driver, watchdog, clock=clock, safety_margin=2.0)
    async with running(agent):
        await eventually(lambda: driver.running() == ["a"])
        link.down = True
        clock.now += 8.5
        await eventually(lambda: driver.running() == [])
        link.on_ping = lambda: setattr(clock, "now", clock.now + 3.0)  # 3 s to connect
        link.down = False
        await eventually(lambda: link.registrations == 2)
    assert link.pings >= 1
    report = link.fence_reports[1]
    assert report is not None and report.seconds_ago == pytest.approx(3.0)
    assert link.fence_reports[0] is None


async def test_fenced_agent_back_does_not_restart_a_guest_that_was_moved(
    watchdog: Watchdog,
) -> None:
    clock = Clock()
    link, driver = FakeLink(ttl=10), LoggingDriver()
    link.assign("a")
    link.assign("b")
    agent = make_agent(link, driver, watchdog, clock=clock, safety_margin=2.0)
    async with running(agent):
        await eventually(lambda: driver.running() == ["a", "b"])
        link.down = True  # a partition: the host can reach nothing
        clock.now += 8.5
        await eventually(lambda: driver.running() == [])  # fenced: both killed
        # meanwhile the control plane moved a to another host (its assignment here goes)
        link.down = False
        link.unassign("a")
        await eventually(lambda: link.registrations == 2)
        await eventually(lambda: driver.running() == ["b"])
        await asyncio.sleep(0.3)
        assert driver.running() == ["b"]
    assert driver.ops("a")[:2] == ["create", "start"] and driver.ops("a").count("start") == 1
    assert "a" not in driver.snapshot()  # the killed copy was cleaned up, never restarted
    assert link.fence_reports[1] is not None and link.fence_reports[1].killed == 2


async def test_watchdog_thread_fences_while_the_event_loop_is_blocked(watchdog: Watchdog) -> None:
    clock = Clock()
    link, driver = FakeLink(ttl=10), LoggingDriver()
    link.assign("a")
    agent = make_agent(link, driver, watchdog, clock=clock, safety_margin=2.0)
    async with running(agent):
        await eventually(lambda: driver.running() == ["a"])
        link.keepalive_down = True
        clock.now += 9
        time.sleep(0.3)  # the loop is stuck; only the watchdog thread can act
        assert driver.running() == []
        assert agent.fence.is_fenced()


async def test_lease_expired_fences_and_registers_again(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    link.assign("a")
    agent = make_agent(link, driver, watchdog)
    async with running(agent):
        await eventually(lambda: link.states("a")[-1:] == ["running"])
        link.lease += 100  # the server forgot our lease: keepalive says 410
        await eventually(lambda: link.registrations == 2)
        await eventually(
            lambda: link.states("a")[-1:] == ["running"] and len(link.states("a")) == 4
        )
    assert agent.fence.fences == 1
    assert driver.ops("a") == ["create", "start", "create", "start"]


async def test_stale_epoch_rejection_stops_the_guest(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    link.assign("a")
    link.reject.add("a")  # the server says: you no longer hold a at epoch 1
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: driver.ops("a")[-2:] == ["stop", "destroy"])
        assert "a" not in driver.snapshot()
        await asyncio.sleep(0.2)
        assert "a" not in driver.snapshot()  # not restarted for that epoch
        link.reject.clear()
        link.assign("a", epoch=2)
        await eventually(lambda: driver.running() == ["a"])
    assert link.rejected[0]["epoch"] == 1


async def test_dropped_stream_resumes_and_compaction_relists(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), LoggingDriver()
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: len(link.watch_from) == 1)
        link.assign("a")
        await eventually(lambda: driver.running() == ["a"])
        seen = link.revision
        link.drop_streams()
        await eventually(lambda: len(link.watch_from) == 2)
        assert link.watch_from[1] == seen + 1 and link.list_calls == 1
        link.down = True  # the stream drops and cannot come back for a while...
        link.drop_streams()
        link.assign("b")
        link.compact()  # ...during which the history it needs is compacted away
        link.down = False
        await eventually(lambda: driver.running() == ["a", "b"])
        assert link.list_calls == 2


async def test_many_agents_share_one_process_and_one_watchdog_thread() -> None:
    shared = Watchdog(tick=0.02)
    links = [FakeLink() for _ in range(100)]
    drivers = [
        SimDriver(name=f"h{i}", capacity=CAPACITY, start_delay=(0.01, 0.05)) for i in range(100)
    ]
    agents = [
        Agent(
            f"h{i}", links[i], drivers[i], capacity=CAPACITY, watchdog=shared, report_interval=0.01
        )
        for i in range(100)
    ]
    for link in links:
        for g in range(3):
            link.assign(f"g{g}")
    task = asyncio.create_task(run_many(agents))
    try:
        await eventually(lambda: all(len(d.running_uids()) == 3 for d in drivers), timeout=10)
        watchdogs = [t for t in threading.enumerate() if t.name == "podium-watchdog"]
        assert len(watchdogs) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
