"""Usage reports: which measurements are news, how they ride the status reports, and
the agent's loop against a fake link and a SimDriver with a usage model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.agent import Agent, Watchdog
from podium.agent._usage import UsageReports, check_interval, moved
from podium.drivers import DriverError, SimDriver, SimUsage
from tests.unit.agent.agent_support import CAPACITY, FakeLink, eventually
from tests.unit.agent.agent_support import running_agent as running

BASE = {"cpu": 1.0, "memory_mib": 256.0, "iops": 100.0, "net_mbps": 10.0}


def test_a_move_counts_above_the_tolerance_and_the_floor() -> None:
    assert not moved(BASE, {**BASE, "cpu": 1.04}, 0.05)  # 4 %
    assert moved(BASE, {**BASE, "cpu": 1.06}, 0.05)
    assert moved(BASE, {**BASE, "iops": 80.0}, 0.05)  # down counts too
    # an idle guest's noise: +100 % of almost nothing is under the floor
    idle = {"cpu": 0.001, "memory_mib": 256.0, "iops": 0.0, "net_mbps": 0.0}
    assert not moved(idle, {**idle, "cpu": 0.01, "iops": 2.0}, 0.05)


def test_reports_hold_news_only_and_settle_what_the_server_took() -> None:
    r = UsageReports()
    last = {"a": (1, "running", ""), "b": (1, "running", ""), "c": (1, "stopped", "")}
    assert r.offer({"a": BASE, "b": BASE, "c": BASE})
    extra = r.attach([], last)
    assert [e["guest"] for e in extra] == ["a", "b"]  # c is not running
    assert extra[0] == {"guest": "a", "epoch": 1, "state": "running", "message": "", "usage": BASE}
    r.settle(extra, accepted=["a"])  # b's was rejected: dropped, not retried as is
    assert set(r.pending) == {"c"}  # waits until c is reported running (or forgotten)
    assert r.offer({"a": {**BASE, "cpu": 1.01}, "b": BASE}) is True  # b: never taken
    assert set(r.pending) == {"b"}
    # a state report of a (running again, epoch 2) carries its pending usage along
    assert r.offer({"a": {**BASE, "cpu": 2.0}, "b": BASE})
    batch = [{"guest": "a", "epoch": 2, "state": "running", "message": ""}]
    extra = r.attach(batch, last, skip={"b"})  # b is migrating out: nothing for it
    assert extra == [] and batch[0]["usage"]["cpu"] == 2.0
    r.settle(batch, accepted=["a"])
    # an accepted state report without usage (the server dropped it): resend whatever
    r.settle([{"guest": "a", "epoch": 2, "state": "stopped", "message": ""}], accepted=["a"])
    assert r.offer({"a": {**BASE, "cpu": 2.0}})
    # guests the driver no longer measures are forgotten
    assert not r.offer({})
    assert r.pending == {}


def test_the_interval_is_bounded() -> None:
    assert check_interval(30.0) == 30.0
    with pytest.raises(ValueError, match="usage interval 0 s is out of range"):
        Agent("h1", FakeLink(), SimDriver(capacity=CAPACITY), capacity=CAPACITY, usage_interval=0)


def make_agent(link: FakeLink, driver: Any, watchdog: Watchdog) -> Agent:
    return Agent(
        "h1",
        link,
        driver,
        capacity=CAPACITY,
        watchdog=watchdog,
        resync_interval=0.1,
        report_interval=0.01,
        usage_interval=0.05,
    )


def usage_reports(link: FakeLink, guest: str) -> list[dict[str, Any]]:
    return [r for r in link.reports if r["guest"] == guest and "usage" in r]


async def test_the_agent_sends_usage_when_it_moves_and_not_otherwise(watchdog: Watchdog) -> None:
    model = SimUsage(guests={"web-1": 1.0}, clock=lambda: 0.0)
    driver = SimDriver(name="h1", capacity=CAPACITY, start_delay=(0, 0), usage=model)
    link = FakeLink()
    link.assign("web-1")
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: len(usage_reports(link, "web-1")) == 1)
        first = usage_reports(link, "web-1")[0]
        assert first["state"] == "running" and first["epoch"] == 1
        assert first["usage"] == {"cpu": 1.0, "memory_mib": 256.0, "iops": 0.0, "net_mbps": 0.0}
        await asyncio.sleep(0.3)  # six steady measurements: no status write
        assert len(usage_reports(link, "web-1")) == 1
        model.set_hot("web-1", 1.5)  # it heats up
        await eventually(lambda: len(usage_reports(link, "web-1")) == 2)
    assert usage_reports(link, "web-1")[1]["usage"]["cpu"] == 1.5
    states = [r["state"] for r in link.reports if r["guest"] == "web-1"]
    assert set(states) <= {"starting", "running"}  # (a quick start is reported running)


class RejectsUsage(FakeLink):
    """A server that takes state reports but refuses every usage report."""

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        plain = [r for r in reports if "usage" not in r]
        answer = await super().report(host, plain)
        answer["rejected"] += [
            {"guest": r["guest"], "reason": "stale epoch"} for r in reports if "usage" in r
        ]
        self.rejected.extend(r for r in reports if "usage" in r)
        return answer


class FailsFirst(SimDriver):
    """A usage source that fails twice, then works."""

    def __init__(self, model: SimUsage) -> None:
        super().__init__(name="h1", capacity=CAPACITY, start_delay=(0, 0), usage=model)
        self.calls = 0

    async def guest_usage(self) -> dict[str, Any] | None:
        self.calls += 1
        if self.calls <= 2:
            raise DriverError("fake: /proc unreadable")
        return await super().guest_usage()


async def test_a_rejected_usage_or_a_failed_read_stops_nothing(watchdog: Watchdog) -> None:
    model = SimUsage(guests={"web-1": 1.0}, clock=lambda: 0.0)
    driver, link = FailsFirst(model), RejectsUsage()
    link.assign("web-1")
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: len(link.rejected) >= 2)  # offered again when it re-measures
        await asyncio.sleep(0.1)
        assert [c.name for c in driver.running_configs()] == ["web-1"]
    assert driver.calls > 2 and link.registrations == 1
    assert all("usage" in r for r in link.rejected)
