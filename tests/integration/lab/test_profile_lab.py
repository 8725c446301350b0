"""Issue 6's identity acceptance on a 2-host qemu lab, driven through the CLI.

A guest wearing profile ``db`` from examples/profiles.yaml (2 NICs on VLANs 100 and
200, an HBA with a WWPN and two LUNs) shows, read inside the guest from ``/sys``, the
MACs and disk WWNs of its profile: after it boots, after a live migration to the other
host, and after a failover (its host killed, the guest restarted on the survivor).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.lab import kill_host
from tests.integration.lab.conftest import netns_run
from tests.integration.lab.qemu_lab import Lab, qemu_lab
from tests.support.guest_shell import guest_run

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "profiles.yaml"
READ_IDENTITY = (
    "for n in /sys/class/net/eth*; do echo mac $(cat $n/address); done; "
    "for d in /sys/block/sd*; do echo wwid $(cat $d/device/wwid); done"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with qemu_lab(
        tmp_path_factory.mktemp("profiles"),
        "--hosts",
        "2",
        tools=("qemu-system-x86_64", "qemu-img", "bridge"),
        vlans=True,
    ) as lab:
        yield lab


def _identity_seen(lab: Lab, guest: dict[str, Any]) -> tuple[set[str], set[str]]:
    """MACs and disk WWIDs as the guest's kernel shows them in /sys."""
    rc, out = guest_run(lab.folder(guest), READ_IDENTITY, timeout=60)
    assert rc == 0, out
    # a line may start with the shell's prompt: look for the words anywhere
    return set(re.findall(r"\bmac (\S+)", out)), set(re.findall(r"\bwwid (\S+)", out))


def _profile(lab: Lab) -> dict[str, Any]:
    items = json.loads(lab.ok("get", "profiles", "-o", "json"))["items"]
    (db,) = [p for p in items if p["name"] == "db"]
    return db


def _wait_on_other_host(lab: Lab, old: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    guest: dict[str, Any] = {}
    while time.monotonic() < deadline:
        guest = lab.guests()["db"]
        if guest["status"]["state"] == "running" and guest["status"]["host"] not in (old, None):
            return guest
        time.sleep(1)
    raise AssertionError(f"db not running on a host other than {old} after {timeout} s: {guest}")


def _taps_vlans(lab: Lab, host: str) -> dict[int, str]:
    """VLAN id -> podium tap that is an access port of it on the host's switch.

    On a kernel without bridge VLAN filtering the lab's hosts carry VLANs on their own
    Open vSwitch (ports with a ``tag``); elsewhere on br0 (``bridge vlan show``).
    """
    db = Path(lab.env["PODIUM_LAB_DIR"]) / lab.guard.name / "hosts" / host / "ovs/run/db.sock"
    out: dict[int, str] = {}
    if db.exists():
        done = subprocess.run(
            ["ovs-vsctl", f"--db=unix:{db}", "--format=csv", "--no-headings",
             "--columns=name,tag", "list", "port"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            name, _, tag = line.partition(",")
            if name.strip('"').startswith("pd") and tag.strip().isdigit():
                out[int(tag)] = name.strip('"')
        return out
    done = netns_run(f"{lab.guard.prefix}{host}", "bridge", "-j", "vlan", "show")
    assert done.returncode == 0, done.stderr
    for port in json.loads(done.stdout or "[]"):
        if not str(port.get("ifname", "")).startswith("pd"):
            continue
        for vlan in port.get("vlans", []):
            if "PVID" in vlan.get("flags", []) and "Egress Untagged" in vlan.get("flags", []):
                out[int(vlan["vlan"])] = port["ifname"]
    return out


def test_a_profiled_guest_keeps_its_macs_and_wwns_through_migration_and_failover(
    lab: Lab,
) -> None:
    lab.ok("apply", "-f", str(EXAMPLE))
    guest = lab.wait_running({"db"}, timeout=240)["db"]
    db = _profile(lab)
    identity = db["status"]["identity"]
    macs = {nic["mac"] for nic in identity["nics"]}
    wwids = {"naa." + lun["wwn"].replace(":", "") for lun in identity["hbas"][0]["luns"]}
    assert len(macs) == 2 and len(wwids) == 2 and identity["hbas"][0]["wwpn"]
    assert [n["vlan"] for n in identity["nics"]] == [100, 200]
    assert db["status"]["guest"] == "db" and db["status"]["host"] == guest["status"]["host"]

    first = guest["status"]["host"]
    assert set(_taps_vlans(lab, first)) >= {100, 200}
    assert _identity_seen(lab, guest) == (macs, wwids)

    # live migration: the same QEMU state moves, the identity with it
    lab.ok("guest", "migrate", "db", timeout=300)
    guest = _wait_on_other_host(lab, first)
    second = guest["status"]["host"]
    assert set(_taps_vlans(lab, second)) >= {100, 200}
    assert _identity_seen(lab, guest) == (macs, wwids)
    shown = lab.ok("profile", "show", "db")
    assert second in shown and all(mac in shown for mac in macs)

    # failover: the host dies with the guest; the guest boots afresh on the survivor
    kill_host(lab.guard.name, second, root=Path(lab.env["PODIUM_LAB_DIR"]))
    guest = _wait_on_other_host(lab, second, timeout=300)
    assert guest["status"]["host"] == first
    assert _identity_seen(lab, guest) == (macs, wwids)
    assert _profile(lab)["status"]["identity"] == identity  # the identity never changed
