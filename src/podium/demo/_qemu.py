"""`podium demo --driver qemu`: the demo on real guests, in a lab of namespace hosts.

::

    podium lab up --driver qemu (server on SQLite, N agents in namespaces)
      -> apply an app of tiny QEMU guests -> wait all running -> ping each from the fabric
      -> live-migrate one (progress sampled) -> back one up while it runs
      -> kill -9 the busiest host (its agent and its QEMUs) -> wait its guests running
         elsewhere -> report -> podium lab down (always)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.demo._run import (
    POLL,
    DemoError,
    DemoReport,
    Progress,
    failover_story,
    wait_running,
)
from podium.drivers.net import namespace_pids
from podium.lab import LabError, lab_dir, lab_down, lab_up, load_state

LAB_NAME = "demo"
GUEST_REQUEST = {"cpu": 1, "memory_mib": 128, "iops": 100, "net_mbps": 10}


def _qemu_uuids() -> Counter[str]:
    """How many QEMU processes outside ``-incoming`` run per ``-uuid`` (hunting doubles)."""
    counts: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in argv[0] or b"-incoming" in argv:
            continue
        with contextlib.suppress(ValueError, IndexError):
            counts[argv[argv.index(b"-uuid") + 1].decode()] += 1
    return counts


def _doubles() -> int:
    return sum(n - 1 for n in _qemu_uuids().values() if n > 1)


def _ping(netns: str, address: str) -> bool:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", "2", "-i", "0.3", "-W", "2",
         address],
        capture_output=True, timeout=15, check=False,
    )  # fmt: skip
    return done.returncode == 0


async def _migrate_one(
    client: AsyncPodiumClient, guests: list[dict[str, Any]], hosts: list[str],
    progress: Progress, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    guest = guests[0]
    source = guest["status"]["host"]
    target = next(h for h in hosts if h != source)
    progress(f"migrating {guest['name']}", 0, 100)
    await client.migrate(guest["name"], target)
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = await client.migration(guest["name"])
        p = record.get("progress") or {}
        if p.get("total"):
            done = 100 * (1 - float(p.get("remaining", 0)) / float(p["total"]))
            progress(f"migrating {guest['name']}", int(done), 100)
        if record.get("state") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise DemoError(f"migration of {guest['name']} did not finish in {timeout:.0f} s")
        await asyncio.sleep(POLL)
    if record["state"] != "completed":
        raise DemoError(f"migration of {guest['name']} {record['state']}: {record.get('message')}")
    progress(f"migrating {guest['name']}", 100, 100)
    result = record.get("result") or {}
    return {
        "guest": guest["name"],
        "from": source,
        "to": target,
        "total_seconds": round(float(record["finished"]) - float(record["started"]), 3),
        "qemu_downtime_ms": result.get("downtime_ms"),
        "transferred_mib": round(float(result.get("transferred", 0)) / 2**20, 1),
    }


async def _backup_one(
    client: AsyncPodiumClient, guest: str, progress: Progress, timeout: float
) -> dict[str, Any]:
    progress(f"backing up {guest}", 0, 1)
    record: dict[str, Any] = await client.create_backup(guest, "auto")
    deadline = time.monotonic() + timeout
    while record.get("state") not in ("completed", "failed"):
        if time.monotonic() > deadline:
            raise DemoError(f"backup of {guest} did not finish in {timeout:.0f} s")
        await asyncio.sleep(POLL)
        record = await client.backup(record["id"])
    if record["state"] != "completed":
        raise DemoError(f"backup of {guest} failed: {record.get('message')}")
    progress(f"backing up {guest}", 1, 1)
    return {k: record.get(k) for k in ("id", "guest", "mode", "bytes", "path")}


def _kill_host(lab_root: Path | None, host: str, netns: str) -> int:
    """kill -9 the host's agent and every QEMU in its namespace: a host crash."""
    state = load_state(lab_dir(LAB_NAME, lab_root))
    victims = list(namespace_pids(netns))
    if state is not None and host in state.agents:
        victims.append(state.agents[host].pid)
    for pid in set(victims):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(set(victims))


async def run_qemu_demo(
    *, hosts: int, guests: int, host_ttl: int = 5, progress: Progress = lambda *_: None,
    timeout: float = 300.0, lab_root: Path | None = None,
) -> DemoReport:  # fmt: skip
    """The demo on a qemu lab; the lab is always taken down again."""
    if hosts < 2:
        raise DemoError("the demo needs at least 2 hosts (one of them is killed)")
    report = DemoReport(hosts=hosts, guests_total=guests, host_ttl_seconds=host_ttl,
                        apps={"web": guests}, driver="qemu")  # fmt: skip
    progress("lab up (qemu)", 0, 1)
    try:
        info = await asyncio.to_thread(
            lab_up, hosts=hosts, driver="qemu", name=LAB_NAME, root=lab_root, host_ttl=host_ttl
        )
    except LabError as err:
        raise DemoError(f"lab up failed: {err}") from err
    progress("lab up (qemu)", 1, 1)
    report.store, report.config = f"sqlite (lab {LAB_NAME})", info.config
    try:
        async with AsyncPodiumClient(ClientConfig.load(info.config)) as client:
            spec = {"replicas": guests, "image": "tiny", "request": GUEST_REQUEST}
            app = {"kind": "App", "name": "web", "spec": spec}
            started = time.monotonic()
            await client.apply([app], source="podium demo")
            placed = await wait_running(
                client, guests, "booting guests", progress=progress, timeout=timeout,
                doubles=_doubles, report=report,
            )  # fmt: skip
            report.initial_start_seconds = round(time.monotonic() - started, 3)
            fabric = f"pdm-{LAB_NAME}-fab"
            answered = 0
            for i, g in enumerate(placed):
                nics = g["status"].get("nics") or []
                ip = str(nics[0]["ip"]).split("/")[0] if nics and nics[0].get("ip") else None
                answered += bool(ip) and await asyncio.to_thread(_ping, fabric, str(ip))
                progress("pinging guests", i + 1, guests)
            report.extra["guests_answering_ping"] = answered
            report.extra["migration"] = await _migrate_one(
                client, placed, list(info.hosts), progress, timeout
            )
            last = placed[-1]["name"]
            report.extra["backup"] = await _backup_one(client, last, progress, timeout)

            placed, _ = await client.list("Guest")
            by_host = Counter(g["status"]["host"] for g in placed)
            victim = max(sorted(by_host), key=lambda h: by_host[h])
            report.failed_host, report.failed_host_guests = victim, by_host[victim]
            progress(f"killing {victim}", 0, 1)
            killed = time.monotonic()
            await asyncio.to_thread(_kill_host, lab_root, victim, f"pdm-{LAB_NAME}-{victim}")
            progress(f"killing {victim}", 1, 1)
            lost_at: float | None = None
            deadline = time.monotonic() + timeout
            while lost_at is None and time.monotonic() < deadline:
                host = await client.get("Host", victim)
                if host["status"]["state"] == "lost":
                    lost_at = time.monotonic()
                await asyncio.sleep(0.05)
            after = await wait_running(client, guests, f"failing over {victim}",
                                       progress=progress, timeout=timeout, doubles=_doubles,
                                       report=report, avoid=victim)  # fmt: skip
            report.failover_seconds = round(time.monotonic() - killed, 3)
            report.detection_seconds = round((lost_at or time.monotonic()) - killed, 3)
            report.guests_running = sum(1 for g in after if g["status"]["state"] == "running")
            events, _ = await client.events(limit=1000)
            report.events = failover_story(events)
    except ClientError as err:
        raise DemoError(str(err)) from err
    finally:
        progress("lab down", 0, 1)
        await asyncio.to_thread(lab_down, LAB_NAME, root=lab_root)
        progress("lab down", 1, 1)
    return report
