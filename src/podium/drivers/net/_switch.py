"""The host switch a driver uses: br0 for untagged NICs, a VLAN switch for the others.

::

    attach(guest, i, mac, vlan)
      vlan None ──────────────────────────────> br0 (LinuxBridgeNetwork, as always)
      vlan N ── kernel bridges filter VLANs? ─yes─> br0, the tap an access port of N
                       │ no (probed once)
                       └── OVS configured? ─yes─> brv (OvsNetwork), access port tag=N
                                  └ no ─> NetworkError: what to install and configure

A tap that changes sides (its NIC got or lost a VLAN) leaves the other switch first.
Where VLANs live on OVS, br0 and brv share the wire to other hosts (the lab's fabric,
or one physical network), so br0 must never carry a tagged frame: :func:`drop_tagged`
puts an nftables rule in the bridge family of the switch's namespace that drops
802.1Q/802.1ad frames entering a bridge from podium taps (chain ``taps``; a lab adds
its uplinks in chain ``uplinks``). Without it a guest on br0 could send tagged frames
into another host's VLAN (brv's trunk takes them) or read VLAN traffic flooded to br0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from podium.drivers.net._bridge import kernel_filters_vlans, tap_name
from podium.drivers.net._fabric import find_link
from podium.drivers.net._flows import NFT
from podium.drivers.net._flows import Runner as NftRunner
from podium.drivers.net._flows import _run as run_nft
from podium.drivers.net._netlink import netlink
from podium.drivers.net._ovs import OvsNetwork
from podium.drivers.net._protocol import HostNetwork, NetworkError

GUARD_TABLE = "podium_vlan"
TAP_PATTERN = "pd*"  # every podium tap (see _bridge.tap_name)


def guard_ruleset(chain: str, ifnames: Sequence[str]) -> str:
    """nft commands that (re)make ``chain``: drop tagged frames entering from ``ifnames``
    (nft patterns: ``pd*``). Idempotent: the chain is flushed, then filled."""
    lines = [
        f"add table bridge {GUARD_TABLE}",
        f"add chain bridge {GUARD_TABLE} {chain} {{ type filter hook prerouting "
        "priority -200; policy accept; }",
        f"flush chain bridge {GUARD_TABLE} {chain}",
    ]
    lines += [
        f'add rule bridge {GUARD_TABLE} {chain} iifname "{name}" '
        "ether type { 8021q, 8021ad } drop"
        for name in ifnames
    ]
    return "\n".join(lines) + "\n"


def drop_tagged(
    netns: str | None,
    chain: str,
    ifnames: Sequence[str],
    *,
    runner: NftRunner = run_nft,
) -> None:
    """Make frames carrying a VLAN tag that enter a Linux bridge of ``netns`` from
    ``ifnames`` be dropped (see the module docstring). Raises :class:`NetworkError`."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    runner([*prefix, NFT, "-f", "-"], guard_ruleset(chain, ifnames))


def _master_of(netns: str | None, tap: str) -> int | None:
    """The index of ``tap``'s master (0: none); None when there is no such tap."""

    def body(ipr: Any) -> int | None:
        index = find_link(ipr, tap)
        if index is None:
            return None
        return int(ipr.link("get", index=index)[0].get("master") or 0)

    return netlink(netns, body, f"looking up tap {tap}")


class HostSwitch:
    """A :class:`HostNetwork` over br0 and, for VLANs the kernel cannot filter, OVS.

    ``filters`` answers whether the kernel's bridges filter VLANs (default: a probe,
    run once, at the first NIC with a VLAN); ``guard`` makes br0 drop tagged frames
    from taps (default: :func:`drop_tagged`; run once, at the first untagged NIC, when
    VLANs go to OVS); ``master_of`` is for tests.
    """

    def __init__(
        self,
        linux: HostNetwork,
        ovs: OvsNetwork | None = None,
        *,
        filters: Callable[[], bool] | None = None,
        guard: Callable[[], None] | None = None,
        master_of: Callable[[str | None, str], int | None] = _master_of,
    ) -> None:
        if ovs is not None and ovs.netns != linux.netns:
            raise NetworkError(
                f"{linux!r} and {ovs!r} must be in one network namespace (their taps share it)"
            )
        self._linux = linux
        self._ovs = ovs
        self._filters_probe = filters or (lambda: kernel_filters_vlans(linux.netns))
        self._filters: bool | None = None
        self._guard = guard or (lambda: drop_tagged(linux.netns, "taps", [TAP_PATTERN]))
        self._guarded = False
        self._master_of = master_of

    @property
    def bridge(self) -> str:
        return self._linux.bridge

    @property
    def netns(self) -> str | None:
        return self._linux.netns

    @property
    def ovs(self) -> OvsNetwork | None:
        return self._ovs

    def __repr__(self) -> str:
        return f"HostSwitch({self._linux!r}, {self._ovs!r})"

    def kernel_filters(self) -> bool:
        """Whether br0 can filter VLANs (probed once)."""
        if self._filters is None:
            self._filters = self._filters_probe()
        return self._filters

    def _on_ovs(self, vlan: int | None) -> bool:
        return vlan is not None and not self.kernel_filters() and self._ovs is not None

    def checksum_offload(self, vlan: int | None) -> bool:
        """Whether a NIC on ``vlan`` may offload checksums (not on OVS's userspace path)."""
        return not self._on_ovs(vlan)

    def _leave_ovs(self, tap: str) -> None:
        # OVS's userspace ports have no kernel master: a tap without one may be a port.
        if self._ovs is not None and self._master_of(self.netns, tap) == 0:
            self._ovs.release(tap)

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        if vlan is not None and not self.kernel_filters():
            if self._ovs is None:
                raise NetworkError(
                    f"guest {guest} NIC {index} is on VLAN {vlan}, but this kernel's bridges "
                    f"cannot filter VLANs (no CONFIG_BRIDGE_VLAN_FILTERING) and the agent has "
                    "no Open vSwitch: install openvswitch-switch, run ovsdb-server and "
                    "ovs-vswitchd with a bridge (ovs-vsctl add-br brv -- set bridge brv "
                    "datapath_type=netdev) whose uplink is a trunk, and start the agent with "
                    "--ovs-db unix:/run/openvswitch/db.sock --ovs-bridge brv "
                    "(or PODIUM_OVS_DB / PODIUM_OVS_BRIDGE)"
                )
            return self._ovs.attach(guest, index, mac, vlan)
        self._leave_ovs(tap_name(guest, index))
        if self._ovs is not None and not self._guarded:
            self._guard()
            self._guarded = True
        return self._linux.attach(guest, index, mac, vlan)

    def detach(self, tap: str) -> None:
        try:
            self._leave_ovs(tap)
        finally:
            self._linux.detach(tap)

    def taps(self) -> list[str]:
        ours = set(self._linux.taps())
        if self._ovs is not None:
            ours |= set(self._ovs.taps())
        return sorted(ours)
