"""Issue 6's DR drill on a 4-host qemu lab in two sites, driven through the CLI.

Site s1 (h1, h2) runs two protected guests wearing profiles (``ledger`` and its clone
``ledger-1``), each writing a marker to its LUN; the replication controller ships their
volumes to site s2's storage. Then:

1. ``podium dr test`` boots copies on s2 in isolated networks, with the data, while
   production keeps running untouched (same uid, host, state, identity, and no
   production key rewritten); ``--cleanup`` removes only the copies.
2. Every host of s1 is killed; ``podium dr failover`` brings both guests up on s2 from
   their replicas, with their MACs and disk WWNs, NICs re-mapped to site s2's networks
   and VLANs, the data, and a loss window within the RPO.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium.lab import kill_host
from tests.integration.lab.qemu_lab import Lab, qemu_lab
from tests.support.guest_shell import guest_run

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RPO = 60  # replicas every 30 s; the loss window adds the time to declare s1 lost
GUESTS = ("ledger", "ledger-1")
SITE_A_HOSTS = ("h1", "h2")
READ_IDENTITY = (
    "for n in /sys/class/net/eth*; do echo mac $(cat $n/address); done; "
    "for d in /sys/block/sd*; do echo wwid $(cat $d/device/wwid); done"
)


def _site_a() -> str:
    """The pools and networks of examples/profiles.yaml, and a protected, pinned profile."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "profiles.yaml").read_text()) if d]
    docs = [d for d in docs if d["kind"] in ("Pool", "Network")]
    docs.append({"kind": "Profile", "name": "ledger", "spec": {
        "nics": [{"network": "front", "mac_pool": "macs"}, {"network": "back", "mac_pool": "macs"}],
        "hbas": [{"wwn_pool": "wwns", "luns": [{"volume": "data", "size_gib": 1}]}],
        "protection": {"rpo_s": RPO},
    }})  # fmt: skip
    docs.append({"kind": "Guest", "name": "ledger", "spec": {
        "profile": "ledger", "site": "s1", "request": {"cpu": 1, "memory_mib": 128},
    }})  # fmt: skip
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with qemu_lab(tmp_path_factory.mktemp("dr"), "--hosts", "4", "--sites", "2", vlans=True) as lab:
        yield lab


def _sh(lab: Lab, guest: dict[str, Any], command: str) -> str:
    rc, out = guest_run(lab.folder(guest), command, timeout=60)
    assert rc == 0, out
    return out


def _seen(lab: Lab, guest: dict[str, Any]) -> tuple[set[str], set[str], str]:
    """MACs and disk WWIDs from /sys, and the marker at the start of the LUN."""
    out = _sh(lab, guest, READ_IDENTITY + "; echo data $(dd if=/dev/sda bs=16 count=1 2>/dev/null)")
    macs = set(re.findall(r"\bmac (\S+)", out))
    wwids = set(re.findall(r"\bwwid (\S+)", out))
    data = re.findall(r"\bdata (MARK-\S+)", out)
    return macs, wwids, data[0] if data else ""


def _profiles(lab: Lab) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in json.loads(lab.ok("get", "profiles", "-o", "json"))["items"]}


def _replica_after(lab: Lab, guest: str, after: float, timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = json.loads(lab.ok("backup", "list", guest, "-o", "json"))["items"]
        done = [
            b for b in items
            if b.get("target") == "replica" and b.get("state") == "completed"
            and float(b.get("created", 0)) > after
        ]  # fmt: skip
        if done:
            last: dict[str, Any] = done[-1]
            return last
        time.sleep(2)
    raise AssertionError(f"no replica of {guest} after {after} within {timeout} s: {items}")


def _wait_state(
    lab: Lab, names: tuple[str, ...], hosts: set[str], timeout: float = 300
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    guests: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        guests = lab.guests()
        if all(
            n in guests
            and guests[n]["status"]["state"] == "running"
            and guests[n]["status"]["host"] in hosts
            for n in names
        ):
            return guests
        time.sleep(1)
    raise AssertionError(f"{names} not running on {hosts} after {timeout} s: {guests}")


def test_dr_drill_then_failover_of_a_whole_site(lab: Lab) -> None:
    lab.ok("apply", "-f", "-", stdin=_site_a())
    lab.ok("apply", "-f", str(EXAMPLES / "dr" / "site-b.yaml"))
    lab.ok("profile", "clone", "ledger", "--count", "1")
    guests = _wait_state(lab, GUESTS, set(SITE_A_HOSTS))
    written = time.time()
    for name in GUESTS:
        _sh(lab, guests[name], f"echo MARK-{name} > /dev/sda && sync")
    replicas = {name: _replica_after(lab, name, written) for name in GUESTS}
    seen = {name: _seen(lab, guests[name]) for name in GUESTS}
    identity = {n: p["status"]["identity"] for n, p in _profiles(lab).items() if n in GUESTS}
    for name in GUESTS:
        macs, wwids, data = seen[name]
        assert macs == {nic["mac"] for nic in identity[name]["nics"]}
        assert wwids == {
            "naa." + lun["wwn"].replace(":", "") for lun in identity[name]["hbas"][0]["luns"]
        }
        assert data == f"MARK-{name}"
        assert replicas[name]["site"] == "s1" and replicas[name]["volumes"]

    # 1. the drill: copies on s2, production untouched
    drill = json.loads(lab.ok("dr", "test", "--from", "s1", "--to", "s2", "--map",
                              str(EXAMPLES / "dr" / "map.yaml"), "--json"))  # fmt: skip
    assert drill["recovered"] == 2, drill
    copies = tuple(line["copy"] for line in drill["guests"])
    assert set(copies) == {f"{n}-drtest" for n in GUESTS}
    now = _wait_state(lab, copies, {"h3", "h4"})
    for name in GUESTS:
        _, _, data = _seen(lab, now[f"{name}-drtest"])
        assert data == f"MARK-{name}"  # the replica's data, on the other site
        prod = now[name]
        assert prod["status"]["state"] == "running" and prod["status"]["host"] in SITE_A_HOSTS
        assert prod["status"]["uuid"] == guests[name]["status"]["uuid"]
        assert _seen(lab, prod)[:2] == seen[name][:2]
    assert {
        n: p["status"]["identity"] for n, p in _profiles(lab).items() if n in GUESTS
    } == identity
    cleaned = json.loads(lab.ok("dr", "test", "--from", "s1", "--to", "s2", "--cleanup", "--json"))
    assert sorted(cleaned["deleted"]) == sorted(
        [f"Guest/{c}" for c in copies] + [f"Profile/{c}" for c in copies]
    )
    assert set(lab.guests()) == set(GUESTS)

    # 2. site s1 dies; failover to s2
    root = Path(lab.env["PODIUM_LAB_DIR"])
    for host in SITE_A_HOSTS:
        kill_host(lab.guard.name, host, root=root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        hosts = {h["name"]: h["status"]["state"] for h in
                 json.loads(lab.ok("get", "hosts", "-o", "json"))["items"]}  # fmt: skip
        if all(hosts[h] == "lost" for h in SITE_A_HOSTS):
            break
        time.sleep(1)
    assert all(hosts[h] == "lost" for h in SITE_A_HOSTS), hosts
    assert set(lab.guests()) == set(GUESTS)  # pinned to s1: HA did not restart them on s2
    done = lab.podium("dr", "failover", "--from", "s1", "--to", "s2", "--map",
                      str(EXAMPLES / "dr" / "map.yaml"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recovered"] == 2 and report["not_recovered"] == 0, report
    for line in report["guests"]:
        assert line["within_rpo"] and 0 <= line["loss_s"] <= RPO, line
        assert line["networks"] == {"front": "front-b", "back": "back-b"}
    after = _wait_state(lab, GUESTS, {"h3", "h4"})
    moved = _profiles(lab)
    for name in GUESTS:
        macs, wwids, data = _seen(lab, after[name])
        assert (macs, wwids) == seen[name][:2]  # the same identity on the other site
        assert data == f"MARK-{name}"
        nics = moved[name]["status"]["identity"]["nics"]
        assert [(n["network"], n["vlan"]) for n in nics] == [("front-b", 300), ("back-b", 400)]
        assert [n["mac"] for n in nics] == [n["mac"] for n in identity[name]["nics"]]
    assert moved["ledger"]["status"]["identity"]["nics"][0]["ip"] == "10.30.0.10/24"  # the map
