"""`podium lab up --store etcd3`: a sim lab on a 3-member etcd cluster the lab starts itself.

The tests of this module share one lab and run in file order; the last one takes it
down. The module's leak guard fails the module if anything of the lab (etcd members
included: their data dirs are under the lab dir, so on their command lines) outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lab.conftest import PODIUM, CliLab, new_guard, require_netns
from tests.support.components import missing_component

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


Lab = CliLab


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    if shutil.which("etcd") is None:
        missing_component("--store etcd3 needs etcd (apt-get install etcd-server)")
    root = tmp_path_factory.mktemp("labs")
    guard = new_guard(root)
    lab = Lab(guard, root, subprocess.CompletedProcess([], 1, "", ""))
    lab.up = lab.podium(
        "lab", "up", "--hosts", "3", "--driver", "sim", "--json", "--name", guard.name,
        "--store", "etcd3", "--host-ttl", "3",
    )  # fmt: skip
    try:
        yield lab
    finally:
        lab.podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
        if leaks:
            pytest.fail("the lab leaked (now removed): " + "; ".join(leaks), pytrace=False)


def items(lab: Lab, kind: str) -> list[dict[str, Any]]:
    out = lab.podium("get", kind, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def test_up_runs_the_server_on_three_lab_etcd_members(lab: Lab) -> None:
    assert lab.up.returncode == 0, lab.up.stderr
    assert list(json.loads(lab.up.stdout)) == ["config", "server", "hosts"]
    state = lab.state()
    members = state["etcd"]
    assert [m["name"] for m in members] == ["e1", "e2", "e3"]
    assert all(_running(m["proc"]["pid"]) for m in members)
    ports = [m["client_port"] for m in members] + [m["peer_port"] for m in members]
    assert len(set(ports)) == 6
    endpoints = ",".join(f"127.0.0.1:{m['client_port']}" for m in members)
    assert state["store"] == f"etcd://{endpoints}"
    assert all((lab.dir / "etcd" / m["name"]).is_dir() for m in members)


def test_hosts_are_ready(lab: Lab) -> None:
    hosts = {h["name"]: h["status"]["state"] for h in items(lab, "hosts")}
    assert hosts == {"h1": "ready", "h2": "ready", "h3": "ready"}


def _wait_running(lab: Lab, name: str, timeout: float = 45) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        guests = {g["name"]: g for g in items(lab, "guests")}
        if name in guests and guests[name]["status"]["state"] == "running":
            return guests[name]
        assert time.monotonic() < deadline, f"{name} not running: {guests.get(name)}"
        time.sleep(0.3)


def test_the_lab_stays_writable_with_one_etcd_member_killed(lab: Lab) -> None:
    first = lab.state()["etcd"][0]
    os.kill(first["proc"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _running(first["proc"]["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    manifest = (
        "kind: Guest\nname: after-loss\n"
        "spec: {image: tiny, request: {cpu: 1, memory_mib: 128, iops: 100, net_mbps: 10}}\n"
    )
    applied = lab.podium("apply", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, applied.stderr
    guest = _wait_running(lab, "after-loss")
    assert guest["status"]["host"] in {"h1", "h2", "h3"}
    assert {h["status"]["state"] for h in items(lab, "hosts")} == {"ready"}


def test_down_stops_the_etcd_members_and_twice_is_fine(lab: Lab) -> None:
    pids = [m["proc"]["pid"] for m in lab.state()["etcd"]]
    down = lab.podium("lab", "down", "--name", lab.guard.name)
    assert down.returncode == 0, down.stderr
    assert not any(_running(pid) for pid in pids)
    assert not (lab.dir / "lab.json").exists()
    assert (lab.dir / "etcd" / "e2.log").exists()  # logs are kept
    again = lab.podium("lab", "down", "--name", lab.guard.name)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_up_without_etcd_says_how_to_install_it(tmp_path: Path) -> None:
    require_netns()
    guard = new_guard(tmp_path)
    env = {**os.environ, "PODIUM_LAB_DIR": str(tmp_path), "PATH": str(tmp_path / "empty")}
    ip = shutil.which("ip")
    assert ip is not None
    bin_dir = tmp_path / "empty"
    bin_dir.mkdir()
    (bin_dir / "ip").symlink_to(ip)  # lab needs ip; etcd is what is missing
    out = subprocess.run(
        [*PODIUM, "lab", "up", "--hosts", "1", "--name", guard.name, "--store", "etcd3"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    try:
        assert out.returncode == 1
        assert "install etcd-server (scripts/setup does)" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert guard.namespaces() == []
    finally:
        leaks = guard.check()
    assert leaks == []
