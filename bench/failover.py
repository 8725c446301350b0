"""Failover time: kill -9 a host (its agent and its QEMUs), time until its guests run elsewhere.

``python bench/failover.py [--json] [--trials 10] [--hosts 3] [--guests 3] [--driver qemu]
[--host-ttl 8]``
(root; QEMU; TCG here)

Brings up a lab (``podium lab up``, default settings: host TTL 8 s), boots ``--guests``
tiny guests (128 MiB), then per trial:

1. picks the host running the most guests and crashes it: SIGKILL to its agent (PID
   from lab.json) and to every process in its namespace, its QEMUs
   (:func:`podium.lab.kill_host`);
2. polls the API every 50 ms (in-process client) and records, from the kill:
   ``suspect_s`` (the host no longer ready), ``lost_s`` (the host ``lost``: its lease
   expired), ``rebound_s`` (every guest it ran bound to another host at a higher epoch),
   ``start_issued_s`` (each of them ``starting`` or ``running`` on its new host: the
   new agent has acted) — the control-plane part, detection + fence wait + rebind +
   start — and ``running_s`` (all running again); ``boot_s`` = running - start issued,
   the guest's own boot on TCG, reported separately;
3. restarts the crashed host's agent as the lab started it
   (:func:`podium.lab.restart_agent`) and waits until it is ready and every guest runs,
   so the next trial starts from ``--hosts`` ready hosts again.

Prints a table, or one JSON object with ``--json`` (p50/p95 per figure, and every
trial). Every wait is bounded; the lab is always taken down (processes by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from podium.client import AsyncPodiumClient, ClientConfig
from podium.lab import kill_host, restart_agent

PODIUM = [sys.executable, "-m", "podium"]
POLL = 0.05
TRIAL_TIMEOUT = 240.0
SETTLE_TIMEOUT = 240.0
FIGURES = ("suspect_s", "lost_s", "rebound_s", "start_issued_s", "running_s", "boot_s")


def _podium(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"podium {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _manifest(guests: int) -> str:
    return "".join(
        f"---\nkind: Guest\nname: fo-{i}\n"
        "spec: {image: tiny, request: {cpu: 1, memory_mib: 128, iops: 100, net_mbps: 10}}\n"
        for i in range(1, guests + 1)
    )


async def _snapshot(client: AsyncPodiumClient) -> tuple[dict[str, str], dict[str, Any]]:
    hosts, _ = await client.list("Host")
    guests, _ = await client.list("Guest")
    return (
        {h["name"]: h["status"]["state"] for h in hosts},
        {g["name"]: g["status"] for g in guests},
    )


async def _settle(client: AsyncPodiumClient, hosts: int, guests: int) -> dict[str, Any]:
    """Wait until every host is ready and every guest runs; return the guests' statuses."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        host_states, statuses = await _snapshot(client)
        ready = sum(1 for s in host_states.values() if s == "ready")
        running = sum(1 for s in statuses.values() if s["state"] == "running")
        if ready == hosts and running == guests:
            return statuses
        if time.monotonic() > deadline:
            raise SystemExit(
                f"not settled after {SETTLE_TIMEOUT:g} s: hosts {host_states}, "
                f"guests { {n: (s['state'], s['host']) for n, s in statuses.items()} }"
            )
        await asyncio.sleep(0.25)


async def _trial(
    client: AsyncPodiumClient, lab: str, root: Path, before: dict[str, Any]
) -> dict[str, Any]:
    per_host: dict[str, list[str]] = {}
    for name, status in before.items():
        per_host.setdefault(status["host"], []).append(name)
    victim = max(sorted(per_host), key=lambda h: len(per_host[h]))
    moved = sorted(per_host[victim])
    epochs = {g: int(before[g]["epoch"]) for g in moved}
    times: dict[str, float] = {}
    killed_at = time.monotonic()
    killed = kill_host(lab, victim, root=root)
    deadline = killed_at + TRIAL_TIMEOUT
    while "running_s" not in times:
        host_states, statuses = await _snapshot(client)
        now = time.monotonic() - killed_at
        state = host_states.get(victim, "lost")
        if state != "ready":
            times.setdefault("suspect_s", now)
        if state == "lost":
            times.setdefault("lost_s", now)
        new = [statuses[g] for g in moved if g in statuses]
        elsewhere = [
            s for s, g in zip(new, moved, strict=True)
            if s["host"] not in (None, victim) and int(s["epoch"]) > epochs[g]
        ]  # fmt: skip
        if len(elsewhere) == len(moved):
            times.setdefault("rebound_s", now)
            if all(s["state"] in ("starting", "running") for s in elsewhere):
                times.setdefault("start_issued_s", now)
            if all(s["state"] == "running" for s in elsewhere):
                times.setdefault("start_issued_s", now)
                times["running_s"] = now
        if time.monotonic() > deadline:
            raise SystemExit(f"trial not done after {TRIAL_TIMEOUT:g} s: {times}, {new}")
        await asyncio.sleep(POLL)
    times["boot_s"] = times["running_s"] - times["start_issued_s"]
    restart_agent(lab, victim, root=root)
    return {
        "host": victim,
        "guests": moved,
        "killed_pids": len(killed),
        **{k: round(v, 3) for k, v in times.items()},
    }


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


async def _measure(
    config_path: str, lab: str, root: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    trials: list[dict[str, Any]] = []
    async with AsyncPodiumClient(ClientConfig.load(config_path)) as client:
        before = await _settle(client, args.hosts, args.guests)
        for i in range(args.trials):
            trials.append(await _trial(client, lab, root, before))
            print(f"trial {i + 1}/{args.trials}: {trials[-1]}", file=sys.stderr)
            before = await _settle(client, args.hosts, args.guests)
    return trials


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="podium-bench-failover-"))
    name = f"fo{os.getpid() % 10000}"
    env = {**os.environ, "PODIUM_LAB_DIR": str(root), "COLUMNS": "200"}
    try:
        up = json.loads(_podium(env, "lab", "up", "--hosts", str(args.hosts), "--driver",
                                args.driver, "--json", "--name", name,
                                "--host-ttl", str(args.host_ttl)))  # fmt: skip
        env["PODIUM_CONFIG"] = up["config"]
        _podium(env, "apply", "-f", "-", stdin=_manifest(args.guests))
        trials = asyncio.run(_measure(up["config"], name, root, args))
    finally:
        subprocess.run([*PODIUM, "lab", "down", "--name", name], env=env, capture_output=True,
                       timeout=300, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.machine()}",
        "driver": args.driver,
        "trials": len(trials),
        "hosts": args.hosts,
        "guests": args.guests,
        "guest_memory_mib": 128,
        "host_ttl_s": args.host_ttl,
        "poll_s": POLL,
    }
    for key in FIGURES:
        values = [t[key] for t in trials]
        summary[f"{key}_p50"] = round(statistics.median(values), 3)
        summary[f"{key}_p95"] = _percentile(values, 95)
    summary["samples"] = trials
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--trials", type=int, default=10, help="host crashes, one after another")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--guests", type=int, default=3)
    parser.add_argument("--driver", default="qemu", choices=("qemu", "sim"))
    parser.add_argument(
        "--host-ttl", type=int, default=8, help="host lease TTL, s (default: the lab's, 8)"
    )
    args = parser.parse_args()
    if args.trials < 1 or args.hosts < 2 or args.guests < 1 or args.host_ttl < 1:
        raise SystemExit("need --trials >= 1, --hosts >= 2, --guests >= 1, --host-ttl >= 1")
    if os.geteuid() != 0 or (args.driver == "qemu" and shutil.which("qemu-system-x86_64") is None):
        raise SystemExit("bench/failover.py needs root and QEMU (scripts/setup installs it)")
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if key != "samples":
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
