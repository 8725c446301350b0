"""Host networking: the per-host virtual switch, guest taps, and the fabric between hosts.

::

    guest NIC ── tap ── host switch (Linux bridge, in the host's netns) ── uplink ── fabric
    (same host: frames stay in the host switch; other hosts: across the fabric)

    HostSwitch          the HostNetwork a driver uses: untagged NICs on br0, NICs with a
                        VLAN on br0 where the kernel filters VLANs, else on OVS (_switch)
    LinuxBridgeNetwork  taps on br0, each in its VLAN where the kernel can (_bridge)
    OvsNetwork          taps as VLAN access ports of an Open vSwitch bridge (_ovs)
    drop_tagged         nftables: br0 drops tagged frames from taps (no VLAN hopping) (_switch)
    create_namespace, ensure_bridge, ensure_veth, ensure_address, links, ...
                        the pieces of a lab fabric, idempotent (_fabric)
    limit_tap, clear_tap, tap_limit
                        a guest NIC's bandwidth limit: tbf on the tap, ifb for what it sends (_tc)
    BridgeFlows         bytes per (source MAC, destination MAC) entering the bridges:
                        an nftables bridge-family set, over the nft command (_flows)
    Router              network rules: a gateway port per routed VLAN on the OVS switch,
                        forwarding only between allowed networks (nftables) (_router)
    all of it over pyroute2 (netlink), behind _netlink; every failure is a NetworkError
"""

from podium.drivers.net._bridge import (
    LinuxBridgeNetwork,
    PortVlan,
    is_tap_name,
    kernel_filters_vlans,
    tap_mac,
    tap_name,
)
from podium.drivers.net._fabric import (
    Link,
    create_namespace,
    delete_link,
    delete_namespace,
    ensure_address,
    ensure_bridge,
    ensure_veth,
    links,
    list_namespaces,
    namespace_exists,
    namespace_pids,
    set_link_up,
)
from podium.drivers.net._flows import BridgeFlows
from podium.drivers.net._ovs import OvsNetwork
from podium.drivers.net._protocol import ChecksumAware, HostNetwork, NetworkError
from podium.drivers.net._router import RoutedNetwork, Router, gateway_mac
from podium.drivers.net._switch import HostSwitch, drop_tagged
from podium.drivers.net._tc import TapLimit, clear_tap, ifb_name, limit_tap, tap_limit

__all__ = [
    "BridgeFlows",
    "ChecksumAware",
    "HostNetwork",
    "HostSwitch",
    "Link",
    "LinuxBridgeNetwork",
    "NetworkError",
    "OvsNetwork",
    "PortVlan",
    "RoutedNetwork",
    "Router",
    "TapLimit",
    "clear_tap",
    "create_namespace",
    "delete_link",
    "delete_namespace",
    "drop_tagged",
    "ensure_address",
    "ensure_bridge",
    "ensure_veth",
    "gateway_mac",
    "ifb_name",
    "is_tap_name",
    "kernel_filters_vlans",
    "limit_tap",
    "links",
    "list_namespaces",
    "namespace_exists",
    "namespace_pids",
    "set_link_up",
    "tap_limit",
    "tap_mac",
    "tap_name",
]
