"""Host networking: the per-host virtual switch, guest taps, and the fabric between hosts.

::

    guest NIC ── tap ── host switch (Linux bridge, in the host's netns) ── uplink ── fabric
    (same host: frames stay in the host switch; other hosts: across the fabric)

    LinuxBridgeNetwork  the HostNetwork a driver uses: taps on br0 (_bridge)
    create_namespace, ensure_bridge, ensure_veth, ensure_address, links, ...
                        the pieces of a lab fabric, idempotent (_fabric)
    all of it over pyroute2 (netlink), behind _netlink; every failure is a NetworkError
"""

from podium.drivers.net._bridge import LinuxBridgeNetwork, is_tap_name, tap_mac, tap_name
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
from podium.drivers.net._protocol import HostNetwork, NetworkError

__all__ = [
    "HostNetwork",
    "Link",
    "LinuxBridgeNetwork",
    "NetworkError",
    "create_namespace",
    "delete_link",
    "delete_namespace",
    "ensure_address",
    "ensure_bridge",
    "ensure_veth",
    "is_tap_name",
    "links",
    "list_namespaces",
    "namespace_exists",
    "namespace_pids",
    "set_link_up",
    "tap_mac",
    "tap_name",
]
