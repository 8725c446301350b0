"""`podium lab up --store etcd3 --servers 3`: a sim lab on a 3-member etcd the lab starts.

Three podium servers share the etcd; agents and the CLI know all three and fail over.

The tests of this module share one lab and run in file order; the last one takes it
down. The module's leak guard fails the module if anything of the lab (etcd members
included: their data dirs are under the lab dir, so on their command lines) outlives it.
"""

from __future__ import annotations

import contextlib
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
import yaml

from tests.chaos.faults import FaultError, LabHandle
from tests.integration.lab.conftest import PODIUM, CliLab, new_guard, require_netns
from tests.support.components import missing_component

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


Lab = CliLab
HOST_TTL = 3
LEADER_TTL = 10  # podium server's default --leader-ttl


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
        "--store", "etcd3", "--host-ttl", str(HOST_TTL), "--servers", "3",
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


def test_three_servers_share_one_ca_and_the_config_names_them_all(lab: Lab) -> None:
    servers = lab.state()["servers"]
    assert len(servers) == 3 and all(_running(s["proc"]["pid"]) for s in servers)
    assert len({s["fabric_url"] for s in servers}) == 3
    config = yaml.safe_load(Path(json.loads(lab.up.stdout)["config"]).read_text())
    assert config["server"] == servers[0]["url"]
    assert config["servers"] == [s["url"] for s in servers[1:]]
    agent = (lab.dir / "lab.json").read_text()
    argv = Path(f"/proc/{lab.state()['agents']['h1']['pid']}/cmdline").read_bytes().split(b"\0")
    assert [a.decode() for a in argv if a.startswith(b"https://")] == [
        s["fabric_url"] for s in servers
    ], agent
    assert LabHandle(lab.dir).leader() in (0, 1, 2)  # exactly one leads


def _sample_hosts(lab: Lab, seconds: float) -> list[dict[str, str]]:
    """Host states every ~0.3 s for ``seconds`` (through the CLI: it must keep answering)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append({h["name"]: h["status"]["state"] for h in items(lab, "hosts")})
        time.sleep(0.3)
    return seen


def test_killing_the_leading_server_moves_nothing_and_another_leads(lab: Lab) -> None:
    """kill -9 the leader: agents fail over to another server at once (host TTL 3 s: a
    slow failover would fence them), a survivor leads within the leadership TTL, and the
    CLI keeps working, also once the server its config names first is gone."""
    handle = LabHandle(lab.dir)
    before = {g["name"]: (g["status"]["host"], g["status"]["epoch"]) for g in items(lab, "guests")}
    leader = handle.leader()
    killed = time.monotonic()
    os.kill(lab.state()["servers"][leader]["proc"]["pid"], signal.SIGKILL)
    survivors = {0, 1, 2} - {leader}
    new_leader = None
    while new_leader is None:
        assert time.monotonic() - killed < 2 * LEADER_TTL + 2, "no new leader in time"
        with contextlib.suppress(FaultError):
            new_leader = handle.leader()
        time.sleep(0.2)
    assert new_leader in survivors
    if 0 in survivors:  # the config's first server: kill it too, the CLI must fall back
        os.kill(lab.state()["servers"][0]["proc"]["pid"], signal.SIGKILL)
    states = _sample_hosts(lab, 3 * HOST_TTL)  # long enough for a missed lease to show
    assert all(s == {"h1": "ready", "h2": "ready", "h3": "ready"} for s in states), states
    after = {g["name"]: (g["status"]["host"], g["status"]["epoch"]) for g in items(lab, "guests")}
    assert after == before  # nothing failed over, nothing fenced
    applied = lab.podium("apply", "-f", "-", stdin=(
        "kind: Guest\nname: after-leader\nspec: {image: tiny, request: {cpu: 1, memory_mib: 64}}\n"
    ))  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    _wait_running(lab, "after-leader")
    fenced = [e for e in _events(lab) if e.get("reason") in {"HostLost", "HostFenced"}]
    assert fenced == []


def _events(lab: Lab) -> list[dict[str, Any]]:
    out = lab.podium("events", "-o", "json", "--limit", "0")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


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
