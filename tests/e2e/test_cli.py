"""The CLI as a user runs it, against a real server and real agents (sim driver)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import yaml

from tests.e2e.conftest import PODIUM, Cluster, start_server, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]


def guests(cluster: Cluster) -> list[dict]:  # type: ignore[type-arg]
    out = cluster.podium("get", "guests", "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def test_version() -> None:
    out = subprocess.run([*PODIUM, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("podium 0.")


def test_admin_conf_is_private(cluster: Cluster) -> None:
    assert stat.S_IMODE(cluster.config.stat().st_mode) == 0o600
    conf = yaml.safe_load(cluster.config.read_text())
    assert conf["server"] == cluster.server_url and conf["server"].startswith("https://")
    assert "BEGIN CERTIFICATE" in conf["ca"] and conf["token"].startswith("pdm_admin_")


def test_examples_apply_and_run_on_sim_hosts(cluster: Cluster) -> None:
    for i, rack in enumerate(["r1", "r1", "r2"]):
        # 24 CPUs: every example, with room to restart one host's guests (admission, K=1)
        cluster.start_agent(f"h{i + 1}", f"rack={rack}", "site=s1", cpu=24)
    wait_for(
        lambda: len(json.loads(cluster.podium("get", "hosts", "-o", "json").stdout)["items"]) == 3
    )
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        if example.name == "demo.yaml":
            continue  # sized for 8 hosts; the demo test applies it through `podium demo`
        out = cluster.podium("apply", "-f", str(example))
        assert out.returncode == 0, f"{example}: {out.stderr}"
        assert "created" in out.stdout
    items = wait_for(
        lambda: (g := guests(cluster)) and all(x["status"]["state"] == "running" for x in g) and g
    )
    assert {g["name"] for g in items} == {
        "web-1", "web-2", "web-3", "cache-1", "cache-2", "db-1", "files-1", "logger-1",
        "ingest-1", "ingest-2",  # qos.yaml
        "store-1", "store-2", "api-1", "api-2", "trainer-1",  # placement.yaml
        "db",  # profiles.yaml: wears profile db (2 NICs on VLANs 100 and 200, an HBA)
    }  # fmt: skip
    for g in items:
        assert {"kind", "name", "spec", "status"} <= g.keys()
        assert {"state", "host", "uuid", "nics"} <= g["status"].keys()
    files = next(g for g in items if g["name"] == "files-1")
    macs = [nic["mac"] for g in items for nic in g["status"]["nics"]]
    assert len(files["status"]["nics"]) == 2 and len(set(macs)) == len(macs) == len(items) + 2
    by_owner: dict[str, set[str]] = {}
    for g in items:
        by_owner.setdefault(str(g.get("owner")), set()).add(g["status"]["host"])
    assert by_owner["api"] <= by_owner["store"]  # near: store
    web_hosts = [g["status"]["host"] for g in items if g.get("owner") == "web"]
    assert len(set(web_hosts)) == 3  # spread: host
    cache_hosts = {g["status"]["host"] for g in items if g.get("owner") == "cache"}
    assert "h3" in cache_hosts and len(cache_hosts) == 2  # spread: rack (r1 = h1,h2; r2 = h3)
    table = cluster.podium("get", "guests")
    assert table.returncode == 0 and "NAME" in table.stdout and "running" in table.stdout
    as_yaml = yaml.safe_load(cluster.podium("get", "guest", "web-1", "-o", "yaml").stdout)
    assert as_yaml["items"][0]["name"] == "web-1"
    again = cluster.podium("apply", "-f", str(ROOT / "examples" / "apps.yaml"))
    assert "unchanged" in again.stdout and "created" not in again.stdout
    events = cluster.podium("events")
    assert "HostJoined" in events.stdout and "GuestPlaced" in events.stdout


def test_delete_app_removes_its_guests(cluster: Cluster) -> None:
    cluster.start_agent("h1")
    manifest = "kind: App\nname: tmp\nspec: {replicas: 2, request: {cpu: 1, memory_mib: 128}}\n"
    assert cluster.podium("apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(lambda: len(guests(cluster)) == 2)
    owned = cluster.podium("delete", "guest", "tmp-1")
    assert owned.returncode != 0 and "owned by App 'tmp'" in owned.stderr
    assert cluster.podium("delete", "app", "tmp").returncode == 0
    wait_for(lambda: guests(cluster) == [])


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_manifest_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Guest\nname: ok-1\nspec: {}\n---\n"
        "kind: Guest\nname: bad\nspec: {request: {cpu: -2}}\n"
    )
    line = one_line_error(cluster.podium("apply", "-f", str(bad)))
    assert str(bad) in line and "document 2" in line and "spec.request.cpu" in line
    assert guests(cluster) == []


def test_unknown_kind(cluster: Cluster) -> None:
    line = one_line_error(cluster.podium("get", "widgets"))
    assert "unknown kind 'widgets'" in line and "hosts, apps, guests, pools" in line


def test_wrong_token(cluster: Cluster, tmp_path: Path) -> None:
    conf = yaml.safe_load(cluster.config.read_text())
    conf["token"] = "pdm_admin_not-a-real-token"
    wrong = tmp_path / "wrong.conf"
    wrong.write_text(yaml.safe_dump(conf))
    line = one_line_error(cluster.podium("get", "guests", env={"PODIUM_CONFIG": str(wrong)}))
    assert "token" in line


def test_missing_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PODIUM_CONFIG"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run(
        [*PODIUM, "get", "guests"], capture_output=True, text=True, env=env, check=False
    )
    line = one_line_error(out)
    assert "--config" in line


def test_server_down(cluster: Cluster) -> None:
    stop(cluster.procs[0])
    line = one_line_error(cluster.podium("get", "guests"))
    assert "cannot reach" in line


def test_store_that_does_not_answer(tmp_path: Path) -> None:
    started = time.monotonic()
    out = subprocess.run(
        [*PODIUM, "server", "--store", "etcd://127.0.0.1:1", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    line = one_line_error(out)
    assert "etcd://127.0.0.1:1" in line and "--store" in line
    assert time.monotonic() - started < 30


def test_bad_store_url(tmp_path: Path) -> None:
    out = subprocess.run(
        [*PODIUM, "server", "--store", "mysql://x", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "sqlite" in one_line_error(out)


def test_restart_keeps_state_and_credentials(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'podium.db'}"
    proc, _ = start_server(tmp_path, store)
    env = {**os.environ, "PODIUM_CONFIG": str(tmp_path / "admin.conf")}
    try:
        manifest = "kind: Guest\nname: keep-me\nspec: {}\n"
        subprocess.run([*PODIUM, "apply", "-f", "-"], input=manifest, text=True, env=env,
                       check=True, capture_output=True)  # fmt: skip
    finally:
        stop(proc)
    proc, _ = start_server(tmp_path, store)
    try:
        out = subprocess.run([*PODIUM, "get", "guest", "keep-me", "-o", "json"], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert json.loads(out.stdout)["items"][0]["name"] == "keep-me"
    finally:
        stop(proc)


def test_cli_reference_is_current() -> None:
    out = subprocess.run([*PODIUM, "reference"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "100"})  # fmt: skip
    assert (ROOT / "docs" / "cli.md").read_text() == out.stdout, (
        "docs/cli.md is stale: run `podium reference > docs/cli.md`"
    )


def test_demo_json() -> None:
    started = time.monotonic()
    out = subprocess.run([*PODIUM, "demo", "--hosts", "8", "--guests", "40", "--json"],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["hosts"] == 8
    assert report["guests_total"] == 40 and report["guests_running"] == 40
    assert report["failover_seconds"] > report["detection_seconds"] > 0
    assert report["double_runs_seen"] == 0
    assert time.monotonic() - started < 120


def test_guest_migrate_drain_and_their_errors_through_the_cli(cluster: Cluster) -> None:
    for name in ("h1", "h2", "h3"):
        cluster.start_agent(name, "rack=r1")
    wait_for(
        lambda: len(json.loads(cluster.podium("get", "hosts", "-o", "json").stdout)["items"]) == 3
    )
    doc = "kind: Guest\nname: mover\nspec: {request: {cpu: 1, memory_mib: 128}}\n"
    assert cluster.podium("apply", "-f", "-", stdin=doc).returncode == 0
    item = wait_for(
        lambda: (g := guests(cluster)) and g[0]["status"]["state"] == "running" and g[0]
    )
    source, mac = item["status"]["host"], item["status"]["nics"][0]["mac"]
    target = next(h for h in ("h1", "h2", "h3") if h != source)

    same = cluster.podium("guest", "migrate", "mover", "--to", source)
    assert same.returncode == 1 and "already runs on" in same.stderr
    assert len(same.stderr.strip().splitlines()) == 1
    unknown = cluster.podium("guest", "migrate", "mover", "--to", "nowhere")
    assert unknown.returncode == 1 and "nowhere" in unknown.stderr

    done = cluster.podium("guest", "migrate", "mover", "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["state"], result["source"], result["target"]) == ("completed", source, target)
    moved = guests(cluster)[0]
    assert moved["status"]["host"] == target and moved["status"]["nics"][0]["mac"] == mac
    assert moved["status"]["epoch"] == item["status"]["epoch"] + 1

    drained = cluster.podium("host", "drain", target)
    assert drained.returncode == 0, drained.stderr
    assert "drained" in drained.stdout
    after = wait_for(
        lambda: (g := guests(cluster)) and g[0]["status"]["state"] == "running" and g[0]
    )
    assert after["status"]["host"] not in (target,)
    events = cluster.podium("events").stdout
    for reason in ("MigrationStarted", "MigrationCompleted", "HostDraining", "HostDrained"):
        assert reason in events
