"""podium.drivers.net: its public surface, and the names and MACs of taps (pure)."""

from __future__ import annotations

import pytest

import podium.drivers.net
from podium.drivers.net import NetworkError, is_tap_name, tap_mac, tap_name


def test_exports() -> None:
    assert sorted(podium.drivers.net.__all__) == [
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


def test_tap_names_are_stable_short_and_distinct() -> None:
    names = {tap_name(f"guest-{i}", nic) for i in range(500) for nic in range(2)}
    assert len(names) == 1000
    assert all(len(n) <= 15 and is_tap_name(n) for n in names)
    assert tap_name("web-1", 0) == tap_name("web-1", 0) != tap_name("web-1", 1)
    long_name = "an-application-with-a-very-long-name-" * 4
    assert len(tap_name(long_name, 9999)) == 15
    assert not is_tap_name("br0") and not is_tap_name("up0")


@pytest.mark.parametrize(("guest", "index"), [("", 0), ("web-1", -1), ("web-1", 10000)])
def test_bad_tap_requests_are_refused(guest: str, index: int) -> None:
    with pytest.raises(NetworkError):
        tap_name(guest, index)


def test_the_tap_mac_is_local_and_differs_from_the_guests() -> None:
    assert tap_mac("52:54:00:AB:CD:EF") == "fe:54:00:ab:cd:ef"
    for bad in ("52:54:00:ab:cd", "zz:54:00:ab:cd:ef", "01:00:5e:00:00:01", ""):
        with pytest.raises(NetworkError, match="MAC"):
            tap_mac(bad)
