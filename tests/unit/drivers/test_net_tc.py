"""tc limits on a guest tap, over a fake netlink: names, rates, the calls, idempotence."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers.net import NetworkError, TapLimit, clear_tap, ifb_name, limit_tap
from podium.drivers.net._tc import INGRESS, ROOT, burst_bytes, rate_bytes

TAP = "pd3fa9c2e1-0"


@dataclass
class FakeIpr:
    """Links by name, and every link/tc call; deleting a missing qdisc fails like netlink."""

    links: dict[str, int] = field(default_factory=lambda: {TAP: 7})
    qdiscs: set[tuple[int, int]] = field(default_factory=set)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def link_lookup(self, *, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []

    def link(self, command: str, **kw: Any) -> None:
        self.calls.append(("link", command, kw.get("ifname") or kw.get("index")))
        if command == "add":
            self.links[kw["ifname"]] = 100 + len(self.links)
        elif command == "del":
            self.links = {n: i for n, i in self.links.items() if i != kw["index"]}
            self.qdiscs = {q for q in self.qdiscs if q[0] != kw["index"]}  # go with the link

    def tc(
        self, command: str, kind: str | None = None, index: int = 0, handle: int = 0, **kw: Any
    ) -> None:
        index, handle = kw.get("index", index), kw.get("handle", handle)
        self.calls.append(("tc", command, kind, index, handle, kw.get("rate"), kw.get("action")))
        if command == "del":
            if (index, handle) not in self.qdiscs:
                raise NetlinkError(errno.EINVAL)
            self.qdiscs.discard((index, handle))
        elif command in ("add", "replace"):
            self.qdiscs.add((index, handle))


def runner(ipr: FakeIpr, seen: list[str | None]) -> Callable[..., Any]:
    def nl(netns: str | None, fn: Callable[[Any], Any], what: str) -> Any:
        seen.append(netns)
        return fn(ipr)

    return nl


def test_names_rates_and_bursts() -> None:
    assert ifb_name(TAP) == "pi3fa9c2e1-0"
    with pytest.raises(NetworkError, match="not a podium tap name"):
        ifb_name("eth0")
    assert rate_bytes(20) == 2_500_000  # 20 Mbit/s
    assert rate_bytes(0.001) == 1000  # a floor: tbf cannot do less usefully
    with pytest.raises(NetworkError, match="must be a positive number"):
        rate_bytes(0)
    assert burst_bytes(2_500_000) == 25_000 and burst_bytes(1000) == 16 * 1024


def test_a_limit_shapes_both_directions_through_an_ifb() -> None:
    ipr, seen = FakeIpr(), []
    result = limit_tap(TAP, 20, netns="pdq-x", nl=runner(ipr, seen))
    assert result == TapLimit(TAP, "pi3fa9c2e1-0", 2_500_000)
    assert seen == ["pdq-x"]
    ifb = ipr.links["pi3fa9c2e1-0"]
    tcs = [c for c in ipr.calls if c[0] == "tc"]
    assert tcs[0] == ("tc", "replace", "tbf", 7, ROOT, 2_500_000, None)  # guest receives
    assert tcs[1] == ("tc", "replace", "tbf", ifb, ROOT, 2_500_000, None)  # guest sends
    assert tcs[2][:3] == ("tc", "del", None)  # an earlier redirect goes first
    assert tcs[3] == ("tc", "add", "ingress", 7, INGRESS, None, None)
    redirect = tcs[4]
    assert redirect[:3] == ("tc", "add-filter", "u32")
    assert redirect[6] == {
        "kind": "mirred",
        "direction": "egress",
        "action": "redirect",
        "ifindex": ifb,
    }
    # again, with another rate: replaced, the ifb reused, no second ingress left over
    limit_tap(TAP, 5, nl=runner(ipr, seen))
    assert list(ipr.links) == [TAP, "pi3fa9c2e1-0"]
    assert (7, INGRESS) in ipr.qdiscs and len(ipr.qdiscs) == 3


def test_a_missing_tap_is_an_error_that_says_attach_first() -> None:
    ipr = FakeIpr(links={})
    with pytest.raises(NetworkError, match="the tap does not exist"):
        limit_tap(TAP, 20, nl=runner(ipr, []))


def test_clearing_removes_qdiscs_and_ifb_and_may_be_repeated() -> None:
    ipr = FakeIpr()
    limit_tap(TAP, 20, nl=runner(ipr, []))
    clear_tap(TAP, nl=runner(ipr, []))
    assert ipr.qdiscs == set()
    assert list(ipr.links) == [TAP]
    clear_tap(TAP, nl=runner(ipr, []))  # nothing left: no error
    assert ipr.qdiscs == set() and list(ipr.links) == [TAP]
