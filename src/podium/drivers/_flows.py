"""Flow accounting: bytes exchanged between guests, as a driver measures them.

::

    qemu: nftables set on the host switch ── (src MAC, dst MAC): bytes ─┐
    sim:  SimTraffic model (bytes/s per app pair)  ── (guest, guest) ────┤
                                                                         v
    FlowSource.flow_counters() ── {(endpoint, endpoint): cumulative bytes} ──> agent
        (rates from deltas)  ──> POST /api/v1/agent/{host}/traffic  ──> server resolves MACs

Vocabulary: an *endpoint* is a guest name, or the MAC of a NIC this host does not run
(``52:54:00:12:34:56``; a guest name never holds ``:``), which the server resolves
through its MAC index. A *pair* is two endpoints in sorted order; its counter is the
bytes of both directions together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

Pair = tuple[str, str]


@runtime_checkable
class FlowSource(Protocol):
    """Drivers that measure the traffic between guests (check with ``isinstance``)."""

    async def flow_counters(self) -> dict[Pair, int] | None:
        """Cumulative bytes per pair of endpoints that involves a guest of this host.

        Counters only grow, except when their source restarts (a host reboot, the
        accounting table recreated): a smaller value than before means a reset. Pairs
        may vanish (idle pairs expire). Returns ``None`` when this host measures
        nothing (no host switch, no traffic model): the agent then stops asking.
        Must not block the event loop; raises :class:`~podium.drivers.DriverError`
        when the measurement failed this time (the agent tries again later).
        """
        ...


def is_mac(endpoint: str) -> bool:
    """Whether ``endpoint`` is a MAC (else a guest name)."""
    return ":" in endpoint


def is_unicast(mac: str) -> bool:
    """Whether ``mac`` is a unicast address (broadcast and multicast are not guests)."""
    try:
        return not int(mac[:2], 16) & 1
    except ValueError:
        return False


def guest_pairs(by_mac: Mapping[Pair, int], local: Mapping[str, str]) -> dict[Pair, int]:
    """Fold directed MAC counters into endpoint pairs involving a local guest.

    ``by_mac``: ``{(source MAC, destination MAC): bytes}``; ``local``: MAC -> name of
    this host's guests. Both directions of a pair add up; a local MAC becomes its
    guest's name, another unicast MAC stays a MAC (the server names it); pairs with no
    local guest, with a broadcast/multicast end, or within one guest are dropped.
    """
    out: dict[Pair, int] = {}
    for (raw_src, raw_dst), count in by_mac.items():
        src, dst = raw_src.lower(), raw_dst.lower()
        a, b = local.get(src), local.get(dst)
        if (a is None and b is None) or not (is_unicast(src) and is_unicast(dst)):
            continue
        ends = (a or src, b or dst)
        if ends[0] == ends[1]:
            continue
        pair = (min(ends), max(ends))
        out[pair] = out.get(pair, 0) + count
    return out
