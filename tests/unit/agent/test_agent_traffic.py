"""Traffic reports: rates from counter deltas (resets included), and the agent's loop
against a fake link, a SimDriver with a traffic model, and a failing flow source."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.agent import Agent, Watchdog
from podium.agent._traffic import MAX_PAIRS, TrafficMeter, check_interval, report_body
from podium.drivers import DriverError, FlowSource, SimDriver, SimTraffic
from tests.unit.agent.agent_support import CAPACITY, FakeLink, eventually
from tests.unit.agent.agent_support import running_agent as running


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rates_come_from_deltas_and_a_smaller_counter_is_a_restart() -> None:
    meter = TrafficMeter()
    assert meter.sample({("a", "b"): 5000}, 10.0) == (0.0, {})  # baseline only
    assert meter.sample({("a", "b"): 7000, ("a", "c"): 300}, 12.0) == (
        2.0,
        {("a", "b"): 1000.0, ("a", "c"): 150.0},  # c is new: all of it is new
    )
    # no new bytes on (a, b): left out; (a, c) restarted at 100 (the set was recreated)
    assert meter.sample({("a", "b"): 7000, ("a", "c"): 100}, 14.0) == (2.0, {("a", "c"): 50.0})
    # unsorted keys from a driver are sorted; a vanished pair (expired) is no error
    assert meter.sample({("z", "a"): 400}, 16.0) == (2.0, {("a", "z"): 200.0})
    assert meter.sample({}, 16.0) == (0.0, {})  # no time passed: nothing to say


def test_report_body_sends_the_busiest_pairs_first_and_at_most_max_pairs() -> None:
    rates = {("a", f"g{i:05d}"): float(i) for i in range(MAX_PAIRS + 10)}
    body = report_body(9.99949, rates)
    assert body["interval_s"] == 9.999
    assert len(body["pairs"]) == MAX_PAIRS
    assert body["pairs"][0] == {
        "a": "a",
        "b": f"g{MAX_PAIRS + 9:05d}",
        "bytes_per_s": MAX_PAIRS + 9,
    }
    assert body["pairs"][-1]["bytes_per_s"] == 10.0


def test_the_interval_is_bounded() -> None:
    assert check_interval(10.0) == 10.0
    for bad in (0.0, -1.0, 7200.0):
        with pytest.raises(ValueError, match="out of range"):
            check_interval(bad)
    link = FakeLink()
    with pytest.raises(ValueError, match="traffic interval 0 s"):
        Agent("h1", link, SimDriver(capacity=CAPACITY), capacity=CAPACITY, traffic_interval=0)


def make_agent(link: FakeLink, driver: Any, watchdog: Watchdog, **kw: Any) -> Agent:
    return Agent(
        "h1",
        link,
        driver,
        capacity=CAPACITY,
        watchdog=watchdog,
        resync_interval=0.1,
        report_interval=0.01,
        traffic_interval=0.05,
        **kw,
    )


async def test_the_agent_reports_the_sim_models_rates(watchdog: Watchdog) -> None:
    clock = Clock()
    model = SimTraffic(apps={("web", "db"): 2000.0}, guests={("web-1", "lone"): 50.0}, clock=clock)
    h1 = SimDriver(name="h1", capacity=CAPACITY, start_delay=(0, 0), traffic=model)
    h2 = SimDriver(name="h2", capacity=CAPACITY, start_delay=(0, 0), traffic=model)
    link = FakeLink()
    link.assign("web-1", app="web")
    link.assign("lone")
    remote = await h2.create(_config("db-1", app="db"))
    await h2.start(remote.name)
    async with running(make_agent(link, h1, watchdog, clock=clock)):
        await eventually(lambda: sorted(c.name for c in h1.running_configs()) == ["lone", "web-1"])
        # the model and the agent share the clock: each step is 2 s of traffic
        for _ in range(60):
            clock.now += 2.0
            await asyncio.sleep(0.06)
            if any(r["pairs"] for _, r in link.traffic_reports[-1:]):
                break
        reports = [r for host, r in link.traffic_reports if host == "h1" and r["pairs"]]
        assert reports, link.traffic_reports
    last = reports[-1]
    rates = {(p["a"], p["b"]): p["bytes_per_s"] for p in last["pairs"]}
    seconds = last["interval_s"]
    # the db runs on h2: h1 still reports the pair (the server keeps the larger of the two)
    assert rates == {
        ("db-1", "web-1"): pytest.approx(2000.0),
        ("lone", "web-1"): pytest.approx(50.0),
    }
    assert seconds > 0 and last["pairs"][0]["a"] == "db-1"  # busiest first
    # h2 counts the same pair, from its side
    assert set(await h2.flow_counters() or {}) == {("db-1", "web-1")}


def _config(name: str, **spec: Any) -> Any:
    from podium.drivers import GuestConfig  # noqa: PLC0415

    return GuestConfig(name, f"uid-{name}", 1, {"request": {"cpu": 1}, **spec})


class BrokenFlows(SimDriver):
    """A driver whose flow counters fail first, then work."""

    def __init__(self) -> None:
        super().__init__(name="h1", capacity=CAPACITY)
        self.calls = 0

    async def flow_counters(self) -> dict[tuple[str, str], int] | None:
        self.calls += 1
        if self.calls <= 2:
            raise DriverError("nft: Operation not permitted (fake)")
        return {("a", "b"): 1000 * self.calls}


async def test_a_failing_source_or_link_never_ends_the_session(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), BrokenFlows()
    assert isinstance(driver, FlowSource)
    agent = make_agent(link, driver, watchdog)
    async with running(agent):
        await eventually(lambda: len(link.traffic_reports) >= 2)
        link.down = True  # reports fail (and so do keepalives, briefly)
        calls = driver.calls
        await eventually(lambda: driver.calls >= calls + 2)
        link.down = False
        await eventually(lambda: len(link.traffic_reports) >= 3)
    assert link.registrations == 1  # one session throughout
    assert all(
        r["pairs"][0]["a"] == "a" and r["pairs"][0]["bytes_per_s"] > 0
        for _, r in link.traffic_reports
    )


async def test_a_driver_that_measures_nothing_sends_nothing(watchdog: Watchdog) -> None:
    link, driver = FakeLink(), SimDriver(name="h1", capacity=CAPACITY)  # no traffic model
    assert await driver.flow_counters() is None
    async with running(make_agent(link, driver, watchdog)):
        await eventually(lambda: link.registrations == 1)
        await asyncio.sleep(0.3)  # six intervals
    assert link.traffic_reports == []


async def test_an_idle_host_sends_one_empty_report_then_nothing(watchdog: Watchdog) -> None:
    clock = Clock()
    model = SimTraffic(apps={("web", "db"): 1000.0}, clock=clock)
    driver = SimDriver(name="h1", capacity=CAPACITY, start_delay=(0, 0), traffic=model)
    link = FakeLink()
    link.assign("web-1", app="web")
    link.assign("db-1", app="db")
    async with running(make_agent(link, driver, watchdog, clock=clock)):
        await eventually(lambda: len(driver.running_configs()) == 2)
        await _tick_until(clock, lambda: any(r["pairs"] for _, r in link.traffic_reports))
        model.set_rate("web", "db", 0.0)  # the talkers go quiet
        await _tick_until(clock, lambda: not link.traffic_reports[-1][1]["pairs"])
        sent = len(link.traffic_reports)
        for _ in range(6):
            clock.now += 1.0
            await asyncio.sleep(0.06)
    assert len(link.traffic_reports) == sent  # one empty report, then silence
    both_local = [r for _, r in link.traffic_reports if r["pairs"]][-1]["pairs"]
    assert both_local == [{"a": "db-1", "b": "web-1", "bytes_per_s": pytest.approx(1000.0)}]


async def _tick_until(clock: Clock, check: Any) -> None:
    for _ in range(100):
        if check():
            return
        clock.now += 1.0
        await asyncio.sleep(0.06)
    raise AssertionError("condition not met")
