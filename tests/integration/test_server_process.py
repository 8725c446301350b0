"""A real `podium server` process: readiness, controllers under leadership, stopping."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from podium.client import AsyncPodiumClient, ClientConfig
from tests.support.server import running_server, sqlite_url, start_server, stop_server


def run_server(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium.server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_it_leads_and_its_controllers_act(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", args=["--leader-ttl", "2"]) as (_, config_path, _):
        async with AsyncPodiumClient(ClientConfig.load(str(config_path))) as client:
            app = {"kind": "App", "name": "web", "spec": {"replicas": 2, "image": "tiny"}}
            await client.apply([app], source="web.yaml")
            async with asyncio.timeout(20):
                while not (await client.health())["leader"]:
                    await asyncio.sleep(0.1)
                while len(names := [g["name"] for g in (await client.list("guests"))[0]]) < 2:
                    await asyncio.sleep(0.1)
            assert sorted(names) == ["web-1", "web-2"]
            metrics = await client._http._client.get(client._http.server + "/metrics")
            assert "podium_leader 1.0" in metrics.text
            assert 'podium_controller_loops_total{controller="app"}' in metrics.text


async def test_two_servers_on_one_store_have_one_leader_and_fail_over(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path)
    args = ["--leader-ttl", "2"]
    one = start_server(tmp_path / "one", store_url=store, args=args)
    two = start_server(tmp_path / "two", store_url=store, args=args)
    try:
        async with (
            AsyncPodiumClient(ClientConfig.load(str(one.config_path))) as c1,
            AsyncPodiumClient(ClientConfig.load(str(two.config_path))) as c2,
        ):
            async with asyncio.timeout(20):
                while True:
                    leaders = [(await c)["leader"] for c in (c1.health(), c2.health())]
                    if any(leaders):
                        break
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # the other keeps waiting: never two leaders
            leaders = [(await c1.health())["leader"], (await c2.health())["leader"]]
            assert sorted(leaders) == [False, True]
            leader, follower = (one, c2) if leaders[0] else (two, c1)
            leader.proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(20):
                while not (await follower.health())["leader"]:
                    await asyncio.sleep(0.1)
    finally:
        stop_server(one, signal.SIGKILL)
        stop_server(two, signal.SIGKILL)


async def test_sigterm_stops_it_promptly_even_with_open_watch_streams(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        async with AsyncPodiumClient(ClientConfig.load(str(server.config_path))) as client:
            stream = client._http.ndjson("/api/v1/guests", {"watch": 1})
            assert (await anext(stream))["type"] == "BOOKMARK"
            began = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rest = [line async for line in stream]
            assert all(line["type"] == "BOOKMARK" for line in rest)
            assert await asyncio.to_thread(server.proc.wait, 15) == 0
            assert time.monotonic() - began < 4  # idle TLS keep-alives do not stall it
    finally:
        stop_server(server, signal.SIGKILL)


def test_a_store_that_cannot_be_used_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite:///{tmp_path}/a-file/podium.db"
    done = run_server("--store", url, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: store {url} did not answer: ")
    assert error.endswith("; is it running? check --store")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_an_etcd_that_does_not_answer_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"etcd://127.0.0.1:{port}"
    done = run_server("--store", url, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: store {url} did not answer: ")
    assert error.endswith("; is it running? check --store")


def test_bad_listen_exits_1(tmp_path: Path) -> None:
    done = run_server("--store", "memory://", "--listen", "nowhere", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: bad --listen 'nowhere': expected HOST:PORT, e.g. 127.0.0.1:7443 or "
        "[::1]:7443 (port 0: any free port)"
    )
