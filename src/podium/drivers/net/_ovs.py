"""A VLAN switch on Open vSwitch: guest taps as access ports of an OVS bridge (``brv``).

::

    QEMU -netdev tap,ifname=pd3fa9c2e1-0 (csum=off,guest_csum=off on its virtio-net-pci)
               │ opens the persistent tap (made here, as for br0: _bridge.ensure_tap)
    pd3fa9c2e1-0 ── port of brv, tag=100 vlan_mode=access ─┐
    pd3fa9c2e1-1 ── port of brv, tag=200 vlan_mode=access ─┼─ brv (datapath_type=netdev)
                                     uplink (no tag: trunk) ─┘        ── fabric / NIC

For hosts whose kernel bridges cannot filter VLANs (no CONFIG_BRIDGE_VLAN_FILTERING):
OVS tags in userspace. An access port takes untagged frames into its VLAN and drops
tagged ones, so a guest cannot hop; the trunk carries every VLAN tagged. Everything
goes through ``ovs-vsctl --db=<socket>``, which waits (bounded) until ovs-vswitchd has
applied the change, so a port exists in the datapath when ``attach`` returns. The
switch itself is the operator's (on a lab host, ``podium lab up`` runs one): podium
only adds and removes ports of its taps. The userspace datapath forwards frames with
partial checksums unfixed, so a guest NIC on it must not offload checksums
(:meth:`OvsNetwork.checksum_offload`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from podium.drivers.net._bridge import (
    check_tap_name,
    check_vlan,
    delete_tap,
    ensure_tap,
    is_tap_name,
    tap_mac,
    tap_name,
)
from podium.drivers.net._command import run_tool
from podium.drivers.net._fabric import find_link
from podium.drivers.net._netlink import netlink
from podium.drivers.net._protocol import NetworkError

VSCTL = "ovs-vsctl"
TIMEOUT = 10  # seconds ovs-vsctl may wait for ovsdb-server and ovs-vswitchd
DEFAULT_BRIDGE = "brv"

Runner = Callable[[Sequence[str]], str]  # argv -> stdout; raises NetworkError


def _run(argv: Sequence[str]) -> str:
    """Run ``argv`` (bounded), return its stdout; every failure is a NetworkError."""
    return run_tool(
        argv,
        timeout=TIMEOUT + 5,
        missing="install Open vSwitch (apt-get install openvswitch-switch)",
    )


def db_target(db: str) -> str:
    """An OVSDB remote for ``--db``: a socket path becomes ``unix:PATH``."""
    if not db:
        raise NetworkError(
            "an Open vSwitch database socket is needed (e.g. unix:/run/openvswitch/db.sock)"
        )
    return db if db.startswith(("unix:", "tcp:", "ssl:")) else f"unix:{db}"


class OvsNetwork:
    """Taps as VLAN access ports of OVS bridge ``bridge`` (a :class:`HostNetwork` for
    NICs with a VLAN). ``db``: ovsdb-server's socket (``unix:PATH`` or a path);
    ``netns``: where the taps are made (the namespace ovs-vswitchd runs in; None: the
    caller's own). ``runner`` is for tests. Synchronous: call it from a thread.
    """

    def __init__(
        self,
        bridge: str = DEFAULT_BRIDGE,
        *,
        db: str,
        netns: str | None = None,
        vsctl: str = VSCTL,
        runner: Runner = _run,
    ) -> None:
        self._bridge = bridge
        self._db = db_target(db)
        self._netns = netns
        self._vsctl = vsctl
        self._runner = runner

    @property
    def bridge(self) -> str:
        return self._bridge

    @property
    def netns(self) -> str | None:
        return self._netns

    @property
    def db(self) -> str:
        return self._db

    def __repr__(self) -> str:
        return f"OvsNetwork({self._bridge!r}, db={self._db!r})"

    def vsctl(self, *args: str) -> str:
        """Run one ``ovs-vsctl`` transaction against this switch's database."""
        return self._runner([self._vsctl, f"--db={self._db}", f"--timeout={TIMEOUT}", *args])

    def checksum_offload(self, vlan: int | None) -> bool:
        """False: the userspace datapath does not complete partial checksums."""
        return False

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        name = tap_name(guest, index)
        local = tap_mac(mac)
        check_vlan(vlan)
        what = f"attaching tap {name} (guest {guest} NIC {index}) to {self._bridge} VLAN {vlan}"
        if vlan is None:
            # A port without a tag is a trunk of every VLAN: never a guest's.
            raise NetworkError(f"{what}: the OVS switch takes NICs with a VLAN only")

        def make(ipr: Any) -> int:
            tap = ensure_tap(ipr, name, local, guest=guest, nic=index, what=what)
            if ipr.link("get", index=tap)[0].get("master"):
                ipr.link("set", index=tap, master=0)  # off br0: it moves to a VLAN
            return tap

        def up(ipr: Any) -> None:
            tap = find_link(ipr, name)
            if tap is None:
                raise NetworkError(f"{what}: the tap vanished")
            ipr.link("set", index=tap, state="up")

        netlink(self._netns, make, what)
        try:
            # One transaction: the port is born (or re-tagged) an access port of its VLAN.
            self.vsctl(
                "--may-exist", "add-port", self._bridge, name,
                "--", "set", "port", name, f"tag={vlan}", "vlan_mode=access",
                f"external_ids:podium-guest={guest}",
            )  # fmt: skip
        except NetworkError as err:
            raise NetworkError(f"{what}: {err} (is ovs-vswitchd running on {self._db}?)") from err
        netlink(self._netns, up, what)
        return name

    def release(self, tap: str) -> None:
        """Take ``tap`` off the OVS bridge (it moves to br0, or goes); keeps the tap."""
        check_tap_name(tap, f"releasing tap {tap}")
        self.vsctl("--if-exists", "del-port", self._bridge, tap)

    def detach(self, tap: str) -> None:
        what = f"detaching tap {tap} from {self._bridge}"
        self.release(tap)
        netlink(self._netns, lambda ipr: delete_tap(ipr, tap, what), what)

    def taps(self) -> list[str]:
        """Podium taps that are ports of this OVS bridge."""
        ports = self.vsctl("list-ports", self._bridge).split()
        return sorted(p for p in ports if is_tap_name(p))

    def port_tags(self) -> dict[str, int | None]:
        """Each port of the bridge with its VLAN tag (None: a trunk)."""
        out = self.vsctl("--format=csv", "--no-headings", "--columns=name,tag", "list", "port")
        ports = set(self.vsctl("list-ports", self._bridge).split())
        tags: dict[str, int | None] = {}
        for line in out.splitlines():
            name, _, tag = line.partition(",")
            name = name.strip('"')
            if name in ports:
                tags[name] = int(tag) if tag.strip().isdigit() else None
        return tags
