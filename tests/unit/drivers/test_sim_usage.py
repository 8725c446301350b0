"""SimUsage: deterministic drifting usage, hot guests and apps, limits; SimDriver as a
UsageSource; as_usage validation."""

from __future__ import annotations

from typing import Any

import pytest

from podium.drivers import GuestConfig, SimDriver, SimUsage, UsageSource, as_usage
from podium.model import Resources

CAPACITY = Resources(cpu=16, memory_mib=16384, iops=4000, net_mbps=4000)
REQUEST = {"cpu": 2, "memory_mib": 1024, "iops": 200, "net_mbps": 100}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def config(name: str, **spec: Any) -> GuestConfig:
    return GuestConfig(name, f"uid-{name}", 1, {"request": dict(REQUEST), **spec})


def test_usage_drifts_within_its_band_and_replays_for_a_seed() -> None:
    clock = Clock()
    model = SimUsage(seed=3, base=0.5, swing=0.2, period=100.0, clock=clock)
    twin = SimUsage(seed=3, base=0.5, swing=0.2, period=100.0, clock=clock)
    other = SimUsage(seed=4, base=0.5, swing=0.2, period=100.0, clock=clock)
    guests = [config("a"), config("b")]
    seen: list[float] = []
    for step in range(40):
        clock.now = step * 5.0
        usage = model.usage(guests)
        assert usage == twin.usage(guests)
        for dim, reserved in REQUEST.items():
            share = usage["a"][dim] / reserved
            assert 0.3 - 1e-3 <= share <= 0.7 + 1e-3, (dim, share)
        seen.append(usage["a"]["cpu"])
    assert max(seen) - min(seen) > 0.5  # it drifts: most of its 2 * 0.4 core band
    assert model.usage(guests) != other.usage(guests)  # another seed, other phases


def test_hot_guests_and_apps_use_a_fixed_factor_capped_by_their_limit() -> None:
    model = SimUsage(seed=1, apps={"db": 1.5}, guests={"web-1": 2.0}, clock=lambda: 0.0)
    capped = config("web-1", app="web", qos={"cpu": {"limit": 3}})
    usage = model.usage([capped, config("db-1", app="db"), config("web-2", app="web")])
    assert usage["web-1"]["cpu"] == 3.0  # 2 * 2 cores, held to its limit of 3
    assert usage["web-1"]["iops"] == 400.0
    assert usage["db-1"] == {dim: 1.5 * v for dim, v in REQUEST.items()}
    assert usage["web-2"]["cpu"] < 2.0  # drifting around half its reservation
    model.set_hot("db-1", 0.1)  # a guest's own factor wins over its app's
    model.set_hot("web-1", None)
    again = model.usage([capped, config("db-1", app="db")])
    assert again["db-1"]["cpu"] == pytest.approx(0.2)
    assert again["web-1"]["cpu"] < 2.0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"base": -0.1}, "base -0.1"),
        ({"base": 0.2, "swing": 0.3}, "exceeds base"),
        ({"period": 0}, "period 0"),
        ({"guests": {"x": float("nan")}}, "factor of guest x"),
    ],
)
def test_a_bad_model_is_refused_saying_why(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimUsage(**kw)


async def test_the_sim_driver_reports_its_running_guests_only() -> None:
    bare = SimDriver(name="h1", capacity=CAPACITY)
    assert isinstance(bare, UsageSource)
    assert await bare.guest_usage() is None  # no model: the agent stops asking
    model = SimUsage(guests={"a": 1.0}, clock=lambda: 0.0)
    driver = SimDriver(name="h1", capacity=CAPACITY, start_delay=(0, 0), usage=model)
    await driver.create(config("a"))
    await driver.create(config("b"))
    await driver.start("a")
    assert await driver.guest_usage() == {"a": {dim: float(v) for dim, v in REQUEST.items()}}


def test_as_usage_fills_missing_dimensions_and_refuses_nonsense() -> None:
    assert as_usage({"cpu": 1}) == {"cpu": 1.0, "memory_mib": 0.0, "iops": 0.0, "net_mbps": 0.0}
    assert as_usage(Resources(cpu=1, memory_mib=2, iops=3, net_mbps=4))["net_mbps"] == 4.0
    with pytest.raises(ValueError, match="unknown usage dimension"):
        as_usage({"gpu": 1})
    with pytest.raises(ValueError, match="cpu=-1"):
        as_usage({"cpu": -1})
