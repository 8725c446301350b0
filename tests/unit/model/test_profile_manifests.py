"""Pool, Network and Profile manifests: good documents, and bad ones refused with fix-its."""

from __future__ import annotations

from typing import Any

import pytest

from podium.model import (
    Kind,
    ManifestError,
    PoolType,
    canonical,
    format_value,
    lun_serial,
    parse_manifest_text,
    parse_range,
    parse_value,
    validate_document,
)


def doc(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


def refused(kind: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as err:
        validate_document(doc(kind, spec), source="f.yaml", document=2)
    return str(err.value)


def test_the_example_file_validates_with_canonical_values() -> None:
    with open("examples/profiles.yaml") as f:
        manifests = parse_manifest_text(f.read())
    kinds = [m.kind for m in manifests]
    assert kinds.count(Kind.POOL) == 4 and Kind.NETWORK in kinds and Kind.PROFILE in kinds
    guest = next(m for m in manifests if m.kind is Kind.GUEST)
    assert guest.spec["profile"] == "db" and "nics" not in guest.spec


def test_pool_values_are_stored_canonically() -> None:
    m = validate_document(
        doc("Pool", {"type": "mac", "range": "02:00:0A:00:00:00-02:00:0a:00:FF:FF"})
    )
    assert m.spec == {"type": "mac", "range": "02:00:0a:00:00:00-02:00:0a:00:ff:ff"}
    m = validate_document(
        doc("Pool", {"type": "wwn", "range": "5001438000000000-5001438000000fff"})
    )
    assert m.spec["range"] == "50:01:43:80:00:00:00:00-50:01:43:80:00:00:0f:ff"
    m = validate_document(
        doc(
            "Pool",
            {
                "type": "ipv6",
                "subnet": "fd00:0::/64",
                "range": "fd00::0010-fd00::ff",
                "gateway": "fd00::1",
                "reserved": ["fd00::20", "fd00::20"],
            },
        )
    )
    assert m.spec == {
        "type": "ipv6",
        "subnet": "fd00::/64",
        "range": "fd00::10-fd00::ff",
        "gateway": "fd00::1",
        "reserved": ["fd00::20"],
    }
    assert validate_document(doc("Pool", {"type": "vlan", "range": "100-199"})).spec["range"] == (
        "100-199"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "mac", "range": "00:00:0a:00:00:00-00:00:0a:00:ff:ff"},
            "not locally administered",
        ),
        ({"type": "mac", "range": "03:00:0a:00:00:00-03:00:0a:00:ff:ff"}, "multicast MAC"),
        ({"type": "mac", "range": "02:00:00:00:00:ff-02:00:00:00:00:00"}, "swap them"),
        ({"type": "mac", "range": "02:00:00:00:00:00-02:ff:ff:ff:ff:ff"}, "at most 16,777,216"),
        ({"type": "wwn", "range": "1f:ff:ff:ff:ff:ff:ff:f0-20:00:00:00:00:00:00:10"}, "(the NAA)"),
        ({"type": "mac", "range": "02:00:0a:00:00:00"}, "not START-END"),
        ({"type": "wwn", "range": "60:01:43:80:00:00:00:00-60:01:43:80:00:00:ff:ff"}, "NAA 6"),
        ({"type": "wwn", "range": "30:01:43:80:00:00:00:00-30:01:43:80:00:00:ff:ff"}, "NAA 3"),
        ({"type": "wwn", "range": "50:01:43:80:00:00:00-50:01:43:80:00:00:ff"}, "eight hex pairs"),
        ({"type": "vlan", "range": "0-10"}, "VLAN 0 is out of range"),
        ({"type": "vlan", "range": "4000-4095"}, "1..4094"),
        ({"type": "vlan", "range": "1-10", "subnet": "10.0.0.0/24"}, "subnet is for ipv4/ipv6"),
        ({"type": "ipv4", "range": "10.0.0.10-10.0.0.20"}, "needs subnet"),
        (
            {"type": "ipv4", "subnet": "10.0.0.0/24", "range": "10.0.1.10-10.0.1.20"},
            "not inside subnet",
        ),
        ({"type": "ipv4", "subnet": "10.0.0.1/24", "range": "10.0.0.10-10.0.0.20"}, "CIDR"),
        (
            {"type": "ipv4", "subnet": "10.0.0.0/24", "range": "10.0.0.0-10.0.0.20"},
            "network or broadcast",
        ),
        (
            {
                "type": "ipv4",
                "subnet": "10.0.0.0/24",
                "range": "10.0.0.10-10.0.0.20",
                "gateway": "10.0.1.1",
            },
            "gateway 10.0.1.1 is not inside subnet",
        ),
        ({"type": "ipv6", "subnet": "10.0.0.0/24", "range": "10.0.0.10-10.0.0.20"}, "IPv6 address"),
        ({"type": "nope", "range": "1-2"}, "field 'spec.type'"),
    ],
)
def test_bad_pools_are_refused_with_the_field_and_the_fix(
    spec: dict[str, Any], message: str
) -> None:
    text = refused("Pool", spec)
    assert text.startswith("f.yaml: document 2: field 'spec")
    assert message in text


def test_network_needs_exactly_one_vlan_source() -> None:
    assert validate_document(doc("Network", {"vlan": 100, "ip_pool": "ips"})).spec == {
        "vlan": 100,
        "ip_pool": "ips",
    }
    assert "never both" in refused("Network", {"vlan": 100, "vlan_pool": "vlans"})
    assert "needs a VLAN" in refused("Network", {"ip_pool": "ips"})
    assert "spec.vlan" in refused("Network", {"vlan": 4095})
    assert "not a valid name" in refused("Network", {"vlan_pool": "Vlans"})


def test_profile_good_document_keeps_only_what_was_said() -> None:
    m = validate_document(
        doc(
            "Profile",
            {
                "nics": [
                    {"network": "front", "mac_pool": "macs", "ip": "10.10.0.20"},
                    {"network": "back", "mac": "00:1B:21:0A:0B:0C"},
                ],
                "hbas": [
                    {
                        "wwn_pool": "wwns",
                        "wwpn": "5001438000000010",
                        "luns": [{"volume": "data", "size_gib": 2}],
                    }
                ],
                "boot": ["network", "disk"],
                "protection": {"rpo_s": 300},
            },
        )
    )
    assert m.spec["nics"][1] == {"network": "back", "mac": "00:1b:21:0a:0b:0c"}
    assert m.spec["hbas"][0]["wwpn"] == "50:01:43:80:00:00:00:10"
    assert m.spec["boot"] == ["network", "disk"] and m.spec["protection"] == {"rpo_s": 300}
    assert validate_document(doc("Profile", {})).spec == {"nics": [], "hbas": [], "boot": ["disk"]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nics": [{"network": "front"}]}, "give mac_pool (allocate) or mac (import)"),
        ({"nics": [{"network": "front", "mac": "01:00:5e:00:00:01"}]}, "not a unicast MAC"),
        ({"nics": [{"network": "front", "mac_pool": "m", "ip": "10.0.0.5/24"}]}, "address only"),
        (
            {
                "nics": [
                    {"network": "f", "mac": "02:00:00:00:00:01"},
                    {"network": "g", "mac": "02:00:00:00:00:01"},
                ]
            },
            "mac 02:00:00:00:00:01 is given twice",
        ),
        ({"hbas": [{"wwpn": "50:01:43:80:00:00:00:10"}]}, "both wwpn and wwnn"),
        (
            {
                "hbas": [
                    {
                        "wwpn": "50:01:43:80:00:00:00:10",
                        "wwnn": "50:01:43:80:00:00:00:11",
                        "luns": [{"volume": "d"}],
                    }
                ]
            },
            "LUN WWNs come from wwn_pool",
        ),
        ({"hbas": [{"wwn_pool": "w", "wwpn": "60:01:43:80:00:00:00:10"}]}, "NAA 6, a 128-bit"),
        (
            {
                "hbas": [
                    {"wwn_pool": "w", "luns": [{"volume": "d"}]},
                    {"wwn_pool": "w", "luns": [{"volume": "d"}]},
                ]
            },
            "volume d is given twice",
        ),
        ({"hbas": [{"wwn_pool": "w", "luns": [{"volume": "d", "size_gib": 0}]}]}, "size_gib"),
        ({"boot": ["disk", "disk"]}, "names a device twice"),
        ({"boot": ["network"]}, "boot 'network' needs a NIC"),
        ({"boot": ["cdrom"]}, "'disk' or 'network'"),
        ({"protection": {"rpo_s": 5}}, "spec.protection.rpo_s"),
    ],
)
def test_bad_profiles_are_refused(spec: dict[str, Any], message: str) -> None:
    assert message in refused("Profile", spec)


def test_a_guest_with_a_profile_declares_no_nics() -> None:
    m = validate_document(doc("Guest", {"profile": "db"}))
    assert m.spec["profile"] == "db" and "nics" not in m.spec
    plain = validate_document(doc("Guest", {}))
    assert "profile" not in plain.spec and plain.spec["nics"] == [{}]
    text = refused("Guest", {"profile": "db", "nics": [{}]})
    assert "wears that profile's NICs: leave nics out" in text
    assert "not a valid profile name" in refused("Guest", {"profile": "DB"})


def test_unknown_kind_lists_the_new_kinds() -> None:
    with pytest.raises(ManifestError, match="Pool, Network, Profile"):
        validate_document({"kind": "Volume", "name": "v", "spec": {}})


def test_value_codecs_round_trip() -> None:
    for kind, text in [
        (PoolType.MAC, "02:00:0a:00:00:05"),
        (PoolType.WWN, "50:01:43:80:00:00:00:02"),
        (PoolType.IPV4, "10.10.0.20"),
        (PoolType.IPV6, "fd00::20"),
        (PoolType.VLAN, "100"),
    ]:
        assert format_value(kind, parse_value(kind, text)) == text
    assert canonical(PoolType.IPV6, "FD00:0:0::20") == "fd00::20"
    assert parse_range(PoolType.VLAN, "100-199") == (100, 199)
    assert lun_serial("db", "data") == "pd-db-data"
    long = lun_serial("a" * 30, "b" * 30)
    assert len(long) == 36 and long.startswith("pd-") and long != lun_serial("a" * 30, "c" * 30)
