"""Bandwidth limits on a guest's tap with tc (over pyroute2's netlink).

::

    guest ──> tap (host side: ingress) ── u32 match-all ── mirred redirect ──> ifb ── tbf ──> bridge
    guest <── tap (host side: egress, root tbf) <──────────────────────────────────────── bridge

A tap's *ingress* is what the guest sends, and its *egress* what the guest receives.
This kernel has no ``police`` action nor ``matchall`` classifier (probed: ``CONFIG_NET_ACT_POLICE``
and ``CONFIG_NET_CLS_MATCHALL`` are off), so the guest's sending side is shaped the classic
way: the tap's ingress redirects every frame to an *ifb* device whose root is a tbf. Both
directions get the same rate (``net_mbps`` is one limit per guest NIC).

Vocabulary: the ifb of tap ``pd3fa9c2e1-0`` is ``pi3fa9c2e1-0`` (same suffix, so a
restarted agent finds it). Every function is idempotent and raises
:class:`~podium.drivers.net.NetworkError`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import protocols
from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers.net._bridge import TAP_PREFIX, is_tap_name
from podium.drivers.net._fabric import find_link
from podium.drivers.net._netlink import netlink
from podium.drivers.net._protocol import NetworkError

IFB_PREFIX = "pi"
ROOT = 0x10000  # handle 1: of the root tbf
INGRESS = 0xFFFF0000  # handle ffff: of the ingress qdisc
ROOT_PARENT = 0xFFFFFFFF  # TC_H_ROOT
INGRESS_PARENT = 0xFFFFFFF1  # TC_H_INGRESS
LATENCY = "50ms"  # how long a frame may wait in a tbf before it is dropped
MIN_BURST = 16 * 1024  # bytes: a few full frames, or a slow rate stalls on every frame
BURST_SECONDS = 0.01  # the burst lets this much time's worth of traffic through at once
Netlink = Callable[[str | None, Callable[[Any], Any], str], Any]


@dataclass(frozen=True, slots=True)
class TapLimit:
    """What :func:`limit_tap` set (or :func:`tap_limit` read back) on one tap."""

    tap: str
    ifb: str
    rate_bps: int  # bytes per second, each direction


def ifb_name(tap: str) -> str:
    """The ifb that shapes what the guest sends through ``tap``."""
    if not is_tap_name(tap):
        raise NetworkError(f"{tap!r} is not a podium tap name (expected like pd3fa9c2e1-0)")
    return IFB_PREFIX + tap[len(TAP_PREFIX) :]


def rate_bytes(mbps: float) -> int:
    """``net_mbps`` (megabits per second) as bytes per second; at least 1 kB/s."""
    if not mbps > 0:
        raise NetworkError(f"net_mbps limit {mbps!r} must be a positive number")
    return max(1000, int(mbps * 1_000_000 / 8))


def burst_bytes(rate: int) -> int:
    return max(MIN_BURST, int(rate * BURST_SECONDS))


def limit_tap(
    tap: str, mbps: float, *, netns: str | None = None, nl: Netlink = netlink
) -> TapLimit:
    """Hold both directions of ``tap`` to ``mbps``; replaces an earlier limit.

    The tap must exist (``HostNetwork.attach`` first). ``nl`` is the netlink edge (a
    fake in unit tests). Raises :class:`NetworkError`.
    """
    ifb = ifb_name(tap)
    rate = rate_bytes(mbps)
    burst = burst_bytes(rate)
    what = f"limiting tap {tap} to {mbps:g} Mbit/s"

    def body(ipr: Any) -> TapLimit:
        index = find_link(ipr, tap)
        if index is None:
            raise NetworkError(f"{what}: the tap does not exist (attach it first)")
        ifb_index = find_link(ipr, ifb)
        if ifb_index is None:
            ipr.link("add", ifname=ifb, kind="ifb")
            ifb_index = find_link(ipr, ifb)
            if ifb_index is None:
                raise NetworkError(f"{what}: ifb {ifb} vanished right after it was made")
        ipr.link("set", index=ifb_index, state="up")
        tbf = {"rate": rate, "burst": burst, "latency": LATENCY}
        # guest receives: the tap's egress
        ipr.tc("replace", "tbf", index, ROOT, **tbf)
        # guest sends: the tap's ingress, redirected to the ifb, shaped on its egress
        ipr.tc("replace", "tbf", ifb_index, ROOT, **tbf)
        _delete_qdisc(ipr, index, INGRESS, INGRESS_PARENT)  # drops a previous redirect filter
        ipr.tc("add", "ingress", index, INGRESS)
        ipr.tc(
            "add-filter",
            "u32",
            index,
            parent=INGRESS,
            prio=1,
            protocol=protocols.ETH_P_ALL,
            target=0x1,
            keys=["0x0/0x0+0"],  # every frame
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": ifb_index,
            },
        )
        return TapLimit(tap, ifb, rate)

    result: TapLimit = nl(netns, body, what)
    return result


def clear_tap(tap: str, *, netns: str | None = None, nl: Netlink = netlink) -> None:
    """Remove a limit from ``tap`` (its qdiscs and its ifb). Nothing there is no error."""
    ifb = ifb_name(tap)

    def body(ipr: Any) -> None:
        index = find_link(ipr, tap)
        if index is not None:
            _delete_qdisc(ipr, index, INGRESS, INGRESS_PARENT)
            _delete_qdisc(ipr, index, ROOT, ROOT_PARENT)
        ifb_index = find_link(ipr, ifb)
        if ifb_index is not None:
            try:
                ipr.link("del", index=ifb_index)
            except NetlinkError as err:
                if err.code != errno.ENODEV:  # gone meanwhile
                    raise

    nl(netns, body, f"removing the limit of tap {tap}")


def tap_limit(tap: str, *, netns: str | None = None, nl: Netlink = netlink) -> TapLimit | None:
    """The limit on ``tap`` now: both tbfs and the redirect must be there, else ``None``."""
    ifb = ifb_name(tap)

    def body(ipr: Any) -> TapLimit | None:
        index, ifb_index = find_link(ipr, tap), find_link(ipr, ifb)
        if index is None or ifb_index is None:
            return None
        rates = [_tbf_rate(ipr, i) for i in (index, ifb_index)]
        kinds = {q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index)}
        redirect = bool(ipr.get_filters(index, parent=INGRESS)) if "ingress" in kinds else False
        if rates[0] is None or rates[0] != rates[1] or not redirect:
            return None
        return TapLimit(tap, ifb, rates[0])

    result: TapLimit | None = nl(netns, body, f"reading the limit of tap {tap}")
    return result


def _tbf_rate(ipr: Any, index: int) -> int | None:
    for qdisc in ipr.get_qdiscs(index):
        if qdisc.get_attr("TCA_KIND") == "tbf" and qdisc["parent"] == ROOT_PARENT:
            parms = qdisc.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            return int(parms["rate"])
    return None


def _delete_qdisc(ipr: Any, index: int, handle: int, parent: int) -> None:
    try:  # no kind: pyroute2 would want a tbf's parameters just to delete it
        ipr.tc("del", index=index, handle=handle, parent=parent)
    except NetlinkError as err:
        # ENOENT/EINVAL: no such qdisc (the kernel answers either for a default root)
        if err.code not in (errno.ENOENT, errno.EINVAL):
            raise
