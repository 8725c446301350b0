"""`podium lab up` / `podium lab down` through the CLI: a 3-host sim lab, used, then removed.

The tests of this module share one lab and run in file order; the last one takes it
down. The module's leak guard fails the module if anything of the lab outlives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.drivers.net import links, namespace_pids
from tests.integration.lab.conftest import (
    CliLab,
    netns_run,
    new_guard,
    ping,
    require_netns,
    root_links,
)

Lab = CliLab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    root = tmp_path_factory.mktemp("labs")
    guard = new_guard(root)
    lab = Lab(guard, root, subprocess.CompletedProcess([], 1, "", ""))
    lab.up = lab.podium(
        "lab", "up", "--hosts", "3", "--driver", "sim", "--json", "--name", guard.name,
        "--host-ttl", "3",
    )  # fmt: skip
    try:
        yield lab
    finally:
        lab.podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
        if leaks:
            pytest.fail("the lab leaked (now removed): " + "; ".join(leaks), pytrace=False)


def output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def items(lab: Lab, kind: str) -> list[dict[str, Any]]:
    out = lab.podium("get", kind, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def test_up_prints_exactly_the_json_of_the_design(lab: Lab) -> None:
    assert lab.up.returncode == 0, lab.up.stderr
    assert len(lab.up.stdout.strip().splitlines()) == 1
    printed = json.loads(lab.up.stdout)
    assert list(printed) == ["config", "server", "hosts"]
    assert printed["hosts"] == ["h1", "h2", "h3"]
    assert printed["server"].startswith("https://127.0.0.1:")
    assert printed["config"] == str(lab.dir / "server" / "admin.conf")
    assert Path(printed["config"]).exists()
    assert lab.state()["status"] == "up"


def test_a_second_up_of_the_same_lab_is_refused(lab: Lab) -> None:
    again = lab.podium("lab", "up", "--hosts", "1", "--name", lab.name)
    assert again.returncode == 1 and "is up already" in again.stderr
    assert lab.state()["status"] == "up"


def test_hosts_are_ready_with_their_labels(lab: Lab) -> None:
    hosts = {h["name"]: h for h in items(lab, "hosts")}
    assert sorted(hosts) == ["h1", "h2", "h3"]
    assert all(h["status"]["state"] == "ready" for h in hosts.values())
    racks = {name: h["spec"]["labels"]["rack"] for name, h in hosts.items()}
    assert racks == {"h1": "r1", "h2": "r2", "h3": "r1"}
    assert {h["spec"]["labels"]["site"] for h in hosts.values()} == {"s1"}


def test_an_app_spread_over_hosts_runs(lab: Lab) -> None:
    manifest = (
        "kind: App\nname: web\nspec: {replicas: 3, image: tiny, spread: host,\n"
        "  request: {cpu: 1, memory_mib: 128, iops: 100, net_mbps: 10}}\n"
    )
    applied = lab.podium("apply", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, applied.stderr
    deadline = time.monotonic() + 30
    while True:
        guests = items(lab, "guests")
        if len(guests) == 3 and all(g["status"]["state"] == "running" for g in guests):
            break
        assert time.monotonic() < deadline, f"not all running: {guests}"
        time.sleep(0.2)
    assert sorted(g["status"]["host"] for g in guests) == ["h1", "h2", "h3"]


def test_agents_reach_the_server_only_through_the_fabric(lab: Lab) -> None:
    state = lab.state()
    layout = state["layout"]
    h1, h2 = layout["hosts"][0], layout["hosts"][1]
    server_ip = layout["fabric_address"].split("/")[0]
    ca = lab.dir / "server" / "ca.pem"
    probe = (
        "import httpx, sys; "
        f"r = httpx.get('https://{server_ip}:7443/healthz', verify='{ca}', timeout=5); "
        "print(r.status_code)"
    )
    from_host = netns_run(h1["netns"], sys.executable, "-c", probe)
    assert from_host.returncode == 0, from_host.stderr  # TLS verified: the address is a SAN
    assert from_host.stdout.strip() in {"200", "401"}
    assert ping(h1["netns"], h2["address"].split("/")[0]).returncode == 0

    in_fabric = netns_run(layout["fabric_netns"], "ss", "-Hltn")
    assert f"{server_ip}:7443" in in_fabric.stdout
    server_pid = state["servers"][0]["proc"]["pid"]
    in_root = output("ss", "-Hltnp")
    mine = [line.split() for line in in_root.splitlines() if f"pid={server_pid}," in line]
    assert mine, in_root
    assert all(cols[3].startswith("127.0.0.1:") for cols in mine), mine
    assert "10.213." not in output("ip", "-o", "addr")  # lab addresses: in lab namespaces only


def test_down_removes_everything_and_twice_is_fine(lab: Lab) -> None:
    state = lab.state()
    namespaces = [state["layout"]["fabric_netns"], *(h["netns"] for h in state["layout"]["hosts"])]
    pids = [state["servers"][0]["proc"]["pid"], *(a["pid"] for a in state["agents"].values())]
    pids += [p for ns in namespaces for p in namespace_pids(ns)]
    before = root_links()

    down = lab.podium("lab", "down", "--name", lab.name)
    assert down.returncode == 0, down.stderr
    assert "is down" in down.stdout

    listed = output("ip", "netns", "list")
    assert not any(ns in listed for ns in namespaces), listed
    assert not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in pids)
    assert root_links() <= before
    assert not any(link.name.startswith(("up-", "pd")) for link in links(None))
    assert not (lab.dir / "lab.json").exists()
    assert (lab.dir / "server" / "server.log").exists()  # logs are kept

    again = lab.podium("lab", "down", "--name", lab.name)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_a_failed_up_removes_what_it_made(tmp_path: Path) -> None:
    require_netns()
    guard = new_guard(tmp_path)
    lab = Lab(guard, tmp_path, subprocess.CompletedProcess([], 1, "", ""))
    try:
        out = lab.podium(
            "lab", "up", "--hosts", "2", "--name", guard.name,
            "--store", "sqlite:////proc/no-such-dir/podium.db",
        )  # fmt: skip
        assert out.returncode == 1
        assert "error:" in out.stderr and "podium server exited" in out.stderr
        assert "removing what it made" in out.stderr
        assert guard.namespaces() == []
        assert not (lab.dir / "lab.json").exists()
    finally:
        leaks = guard.check()
    assert leaks == []
