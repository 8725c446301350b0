"""Network rules on a host: route between allowed networks through a gateway port on each.

::

    GET /api/v1/agent/{host}/networks ──> [RoutedNetwork(name, vlan, subnet, gateway, peers)]
    Router.reconcile(networks), for each network N on VLAN V:
      brv ── rswV (access port tag=V) ══ veth ══ rgwV  GATEWAY/PREFIX, MAC gateway_mac(host, V)
                                                  (in the router's namespace)
      net.ipv4.ip_forward=1 (IPv6: forwarding), conf.all.arp_ignore=1 while any is routed
      table inet podium_rules                         (rewritten whole, in one nft run)
        chain forward: from "pd*" (taps), "rsw*": drop     (see below)
                       iifname rgwA oifname rgwB accept   for each allowed pair, both ways
                       iifname "rgw*" drop; oifname "rgw*" drop   (nothing else crosses)
        chain input:   from "pd*", "rsw*": drop; from "rgwV": ICMP to its gateway only
                       (it answers pings; nothing else of the host is reachable from a
                       VLAN; IPv6 keeps neighbour discovery)
      a port of a network no longer listed: its veth and OVS port go; none listed: the
      table goes and forwarding returns to what it was before the router turned it on

Every host runs the same gateway address on each routed VLAN, each with its own MAC
(derived from the host name and the VLAN, so the fabric never sees one MAC on two
ports): a guest's ARP for its gateway may be answered by any host, and each routes the
same pairs, so it does not matter which one it learns; the gateway address answers on
the host the frame reaches. The rules are stateless (interface pairs, no conntrack),
because a reply may come back through another host's router than the one the request
went through. The forward chain's policy stays ``accept`` and it drops only what enters
or leaves a gateway port: the namespace may forward (or bridge, with br_netfilter)
other traffic that is not ours to judge.

Where the router shares its namespace with the guests' taps (a lab host), the kernel
also receives every frame a guest sends into its tap (OVS's userspace datapath reads
the tap beside the kernel's stack): with an address of its own in the namespace, the
kernel would answer a guest's ARP for its gateway from the tap (with the tap's MAC) and
route what came in there, around the rules. ``arp_ignore=1`` (answer only for an
address of the interface asked on) and the drops of what enters from taps and from the
switch ends of the gateway ports close that path; a bridged tap (br0, br_netfilter)
enters the inet hooks as the bridge, so br0's guests are untouched.

Where it runs: the router's namespace (``netns``) must be one whose forwarding the
operator gave podium (``podium agent --router-netns``): a lab host's own namespace, or
a dedicated one on a real host. All commands go through ``runner`` (tests: a fake).
Synchronous: call it from a thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podium.drivers.net._bridge import check_vlan
from podium.drivers.net._command import run_tool
from podium.drivers.net._flows import NFT
from podium.drivers.net._ovs import OvsNetwork
from podium.drivers.net._protocol import NetworkError
from podium.drivers.net._switch import TAP_PATTERN

TABLE = "podium_rules"
GW_PREFIX = "rgw"  # the router's end of a gateway port (carries the gateway address)
SW_PREFIX = "rsw"  # the switch's end: an access port of the VLAN on the OVS bridge
IP = "ip"
SYSCTL = "sysctl"
TIMEOUT = 15  # seconds one command may take
UNROUTED = (TAP_PATTERN, f"{SW_PREFIX}*")  # never a way in: see the module docstring
_GW_NAME = re.compile(rf"^{GW_PREFIX}(\d{{1,4}})$")
_SW_NAME = re.compile(rf"^{SW_PREFIX}(\d{{1,4}})$")

NAMESPACE_WIDE = (  # restored when the router routes nothing any more
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv6.conf.all.forwarding",
)

Runner = Callable[[Sequence[str], str | None], str]  # (argv, stdin) -> stdout; NetworkError


def _run(argv: Sequence[str], stdin: str | None) -> str:
    """Run ``argv`` (bounded), return its stdout; every failure is a NetworkError."""
    return run_tool(
        argv,
        timeout=TIMEOUT,
        stdin=stdin,
        missing="network rules need iproute2, procps (sysctl) and nftables",
    )


@dataclass(frozen=True, slots=True)
class RoutedNetwork:
    """One network a host routes: its VLAN, subnet, gateway and the networks it may reach."""

    name: str
    vlan: int
    subnet: str
    gateway: str
    peers: tuple[str, ...]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> RoutedNetwork:
        """From the server's JSON; raises :class:`NetworkError` for a malformed entry."""
        try:
            net = cls(
                name=str(data["name"]),
                vlan=int(data["vlan"]),
                subnet=str(ipaddress.ip_network(data["subnet"])),
                gateway=str(ipaddress.ip_address(data["gateway"])),
                peers=tuple(sorted(str(p) for p in data["peers"])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise NetworkError(f"bad routed network {dict(data)!r}: {err}") from err
        check_vlan(net.vlan)
        if ipaddress.ip_address(net.gateway) not in ipaddress.ip_network(net.subnet):
            raise NetworkError(f"network {net.name}: gateway {net.gateway} not in {net.subnet}")
        return net

    @property
    def address(self) -> str:
        """The gateway with the subnet's prefix (``10.10.0.1/24``)."""
        return f"{self.gateway}/{ipaddress.ip_network(self.subnet).prefixlen}"

    @property
    def v6(self) -> bool:
        return ":" in self.gateway


def gw_port(vlan: int) -> str:
    return f"{GW_PREFIX}{vlan}"


def sw_port(vlan: int) -> str:
    return f"{SW_PREFIX}{vlan}"


def gateway_mac(host: str, vlan: int) -> str:
    """The gateway port's MAC on ``host`` for ``vlan``: locally administered unicast
    (first octet 0e), 24 bits of the host name's hash, then the VLAN id."""
    digest = hashlib.sha256(host.encode()).digest()[:3]
    octets = [0x0E, *digest, vlan >> 8, vlan & 0xFF]
    return ":".join(f"{o:02x}" for o in octets)


def ruleset(networks: Sequence[RoutedNetwork]) -> str:
    """The nft script that (re)makes table ``inet podium_rules`` for ``networks`` in one
    transaction; for no networks, one that removes the table (if any)."""
    lines = [f"add table inet {TABLE}", f"delete table inet {TABLE}"]
    if not networks:
        return "\n".join(lines) + "\n"
    vlan = {n.name: n.vlan for n in networks}
    t = f"inet {TABLE}"
    lines += [
        f"add table {t}",
        f"add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}",
        *(f'add rule {t} forward iifname "{name}" drop' for name in UNROUTED),
    ]
    for net in sorted(networks, key=lambda n: n.vlan):
        for peer in net.peers:
            if peer in vlan and peer != net.name:
                lines.append(
                    f'add rule {t} forward iifname "{gw_port(net.vlan)}" '
                    f'oifname "{gw_port(vlan[peer])}" accept'
                )
    lines += [
        f'add rule {t} forward iifname "{GW_PREFIX}*" drop',
        f'add rule {t} forward oifname "{GW_PREFIX}*" drop',
        f"add chain {t} input {{ type filter hook input priority 0; policy accept; }}",
        *(f'add rule {t} input iifname "{name}" drop' for name in UNROUTED),
    ]
    for net in sorted(networks, key=lambda n: n.vlan):  # pings of the gateway itself
        family, proto = ("ip6", "ipv6-icmp") if net.v6 else ("ip", "icmp")
        lines.append(
            f'add rule {t} input iifname "{gw_port(net.vlan)}" {family} daddr {net.gateway} '
            f"meta l4proto {proto} accept"
        )
    lines += [
        f'add rule {t} input iifname "{GW_PREFIX}*" meta l4proto ipv6-icmp accept',  # ND
        f'add rule {t} input iifname "{GW_PREFIX}*" drop',
    ]
    return "\n".join(lines) + "\n"


class Router:
    """Makes this host a router between the networks it is given (module docstring).

    ``ovs``: the host's VLAN switch (gateway ports join it; its namespace holds their
    switch ends); ``host``: this host's name (the MACs); ``netns``: the router's network
    namespace (None: the caller's own). ``runner`` is for tests.
    """

    def __init__(
        self,
        ovs: OvsNetwork,
        *,
        host: str,
        netns: str | None = None,
        runner: Runner = _run,
    ) -> None:
        self._ovs = ovs
        self._host = host
        self._netns = netns
        self._run = runner
        self._forwarding_before: dict[str, str] = {}  # sysctl -> its value before we set it

    @property
    def netns(self) -> str | None:
        return self._netns

    def __repr__(self) -> str:
        return f"Router({self._ovs!r}, host={self._host!r}, netns={self._netns!r})"

    # -- commands ---------------------------------------------------------------------

    def _ip(self, netns: str | None, *args: str) -> str:
        return self._run([IP, *(["-n", netns] if netns else []), *args], None)

    def _exec(self, netns: str | None, argv: Sequence[str], stdin: str | None = None) -> str:
        prefix = [IP, "netns", "exec", netns] if netns else []
        return self._run([*prefix, *argv], stdin)

    def _links(self, netns: str | None) -> dict[str, str]:
        """Interface name -> MAC, in ``netns``."""
        out = json.loads(self._ip(netns, "-j", "link", "show") or "[]")
        return {str(link["ifname"]): str(link.get("address", "")) for link in out}

    def _addresses(self, port: str) -> set[str]:
        out = json.loads(self._ip(self._netns, "-j", "addr", "show", "dev", port) or "[]")
        return {
            f"{a['local']}/{a['prefixlen']}"
            for link in out
            for a in link.get("addr_info", [])
            if a.get("family") in ("inet", "inet6") and a.get("scope") != "link"
        }

    # -- reconcile ----------------------------------------------------------------------

    def reconcile(self, networks: Sequence[RoutedNetwork]) -> None:
        """Make the host route exactly ``networks`` (idempotent; module docstring).

        Raises :class:`NetworkError`; what was done before the failure stays, and the
        next call finishes it.
        """
        wanted = {n.vlan: n for n in networks}
        if len(wanted) != len(networks):
            names = sorted(f"{n.name} (VLAN {n.vlan})" for n in networks)
            raise NetworkError(f"two routed networks share a VLAN: {', '.join(names)}")
        sw_ns = self._ovs.netns
        here = self._links(self._netns)
        ports = set(self._ovs.vsctl("list-ports", self._ovs.bridge).split())
        # leave: ports of networks no longer listed
        for name in sorted(here):
            m = _GW_NAME.match(name)
            if m and int(m.group(1)) not in wanted:
                self._ovs.vsctl("--if-exists", "del-port", self._ovs.bridge, sw_port(int(m[1])))
                self._ip(self._netns, "link", "del", name)  # takes its peer with it
        for name in sorted(ports):
            m = _SW_NAME.match(name)
            if m and int(m.group(1)) not in wanted:
                self._ovs.vsctl("--if-exists", "del-port", self._ovs.bridge, name)
        if not wanted:
            self._exec(self._netns, [NFT, "-f", "-"], ruleset([]))
            self._restore_forwarding()
            return
        # join: a gateway port for each listed network
        switch_side = self._links(sw_ns)
        for vlan, net in sorted(wanted.items()):
            gw, sw, mac = gw_port(vlan), sw_port(vlan), gateway_mac(self._host, vlan)
            if gw not in here:
                if sw in switch_side:  # half a pair (a move that failed): start again
                    self._ip(sw_ns, "link", "del", sw)
                self._ip(sw_ns, "link", "add", sw, "type", "veth", "peer", "name", gw)
                if self._netns != sw_ns:  # None: this process's own namespace
                    target = self._netns or str(os.getpid())
                    self._ip(sw_ns, "link", "set", gw, "netns", target)
                here[gw] = ""
            if here[gw].lower() != mac:
                self._ip(self._netns, "link", "set", gw, "address", mac)
            if self._addresses(gw) != {net.address}:
                self._ip(self._netns, "addr", "flush", "dev", gw)
                extra = ["nodad"] if net.v6 else []
                self._ip(self._netns, "addr", "add", net.address, "dev", gw, *extra)
            self._ip(self._netns, "link", "set", gw, "up")
            self._ip(sw_ns, "link", "set", sw, "up")
            self._ovs.vsctl(
                "--may-exist", "add-port", self._ovs.bridge, sw,
                "--", "set", "port", sw, f"tag={vlan}", "vlan_mode=access",
                f"external_ids:podium-router={net.name}",
            )  # fmt: skip
        self._forward(list(wanted.values()))
        self._exec(self._netns, [NFT, "-f", "-"], ruleset(list(wanted.values())))

    def _forward(self, networks: Sequence[RoutedNetwork]) -> None:
        """Forwarding on and ARP answered only for the asked interface's own addresses
        (remembering both as they were); ARP asked with the port's own address."""
        settings = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.arp_ignore": "1"}
        if any(n.v6 for n in networks):
            settings["net.ipv6.conf.all.forwarding"] = "1"
        for net in networks:
            settings[f"net.ipv4.conf.{gw_port(net.vlan)}.arp_announce"] = "2"
        for key in NAMESPACE_WIDE:
            if key in settings and key not in self._forwarding_before:
                now = self._exec(self._netns, [SYSCTL, "-n", key]).strip()
                self._forwarding_before[key] = now
        self._exec(self._netns, [SYSCTL, "-qw", *(f"{k}={v}" for k, v in settings.items())])

    def _restore_forwarding(self) -> None:
        if self._forwarding_before:
            back = [f"{k}={v}" for k, v in sorted(self._forwarding_before.items())]
            self._exec(self._netns, [SYSCTL, "-qw", *back])
            self._forwarding_before.clear()

    def clear(self) -> None:
        """Route nothing: remove every gateway port and the rules (idempotent)."""
        self.reconcile([])
