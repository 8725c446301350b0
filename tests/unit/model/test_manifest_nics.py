"""Guest virtual IO in manifests: nics, disk_gib, workload; errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from podium.model import ManifestError, validate_document


def guest(**spec: Any) -> dict[str, Any]:
    return {"kind": "Guest", "name": "g", "spec": spec}


def test_defaults_one_nic_one_gib_idle() -> None:
    spec = validate_document(guest()).spec
    assert (spec["nics"], spec["disk_gib"], spec["workload"]) == ([{}], 1.0, "idle")
    app = validate_document({"kind": "App", "name": "web", "spec": {"replicas": 2}}).spec
    assert (app["nics"], app["disk_gib"], app["workload"]) == ([{}], 1.0, "idle")


def test_fixed_addresses_are_kept_normalised_and_unset_ones_left_out() -> None:
    nics = [{"mac": "52:54:00:0a:0b:0c", "ip": "10.0.0.5/24"}, {"ip": "fd00::0005"}, {}]
    spec = validate_document(guest(nics=nics, disk_gib=2.5, workload="disk-writer")).spec
    assert spec["nics"] == [nics[0], {"ip": "fd00::5"}, {}]
    assert (spec["disk_gib"], spec["workload"]) == (2.5, "disk-writer")
    assert validate_document(guest(nics=[])).spec["nics"] == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"nics": [{"mac": "52:54:00:AA:00:01"}]},
            "field 'spec.nics.0.mac' '52:54:00:AA:00:01' "
            "is not a MAC address: use six lowercase hex pairs",
        ),
        (
            {"nics": [{}, {"mac": "53:54:00:00:00:01"}]},
            "field 'spec.nics.1.mac'",
        ),
        ({"nics": [{"mac": "01:00:5e:00:00:01"}]}, "is a multicast MAC"),
        ({"nics": [{"mac": "52-54-00-00-00-01"}]}, "is not a MAC address"),
        ({"nics": [{"ip": "10.0.0.300"}]}, "field 'spec.nics.0.ip' '10.0.0.300' is not an IP"),
        ({"nics": [{"ip": "224.0.0.1"}]}, "cannot be an interface's address"),
        ({"nics": [{"ip": "10.0.0.1/33"}]}, "field 'spec.nics.0.ip'"),
        ({"nics": [{}] * 9}, "field 'spec.nics' has 9 NICs; a guest has at most 8"),
        ({"nics": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.1/24"}]}, "ip 10.0.0.1 is given to two NICs"),
        ({"nics": [{"mac": "52:54:00:00:00:01"}] * 2}, "mac 52:54:00:00:00:01 is given to two"),
        ({"nics": [{"vlan": 5}]}, "field 'spec.nics.0.vlan' unknown field"),
        ({"nics": {}}, "field 'spec.nics'"),
        ({"disk_gib": 0}, "field 'spec.disk_gib' Input should be greater than 0"),
        ({"disk_gib": 16385}, "field 'spec.disk_gib' Input should be less than or equal to 16384"),
        ({"workload": "busy"}, "field 'spec.workload' Input should be 'idle' or 'disk-writer'"),
    ],
)
def test_bad_guest_io_names_the_field(spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as err:
        validate_document(guest(**spec), source="g.yaml", document=1)
    assert expected in str(err.value) and str(err.value).startswith("g.yaml: document 1: ")


def test_app_replicas_cannot_share_fixed_addresses() -> None:
    doc = {"kind": "App", "name": "web", "spec": {"replicas": 2, "nics": [{"ip": "10.0.0.5"}]}}
    with pytest.raises(ManifestError, match=r"field 'spec\.nics' replicas of an App cannot share"):
        validate_document(doc)
