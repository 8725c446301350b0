"""Live migration through podium vs QEMU's own migration, in one run.

``python bench/migration.py [--json] [--runs N] [--hosts 2]`` (root; QEMU; TCG here)

Brings up a qemu lab (``podium lab up``), boots one tiny guest (128 MiB), then migrates it
back and forth ``--runs`` times with ``podium guest migrate --json`` while a pinger in the
fabric namespace sends an echo every 20 ms. Per run it records:

- podium's end-to-end time (request accepted -> running on the destination, what an
  operator waits for) and QEMU's own migration time for the same run (``total_ms``,
  from ``query-migrate`` on the source): their ratio is podium's orchestration cost;
- downtime as QEMU reports it, podium's switchover (source gone -> destination
  resumed: the price of "never two running"), and the longest gap in echo replies
  seen from outside (the downtime a client sees, at 20 ms resolution).

Prints a table, or one JSON object with ``--json``. Always takes the lab down.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PODIUM = [sys.executable, "-m", "podium"]
GUEST = "kind: Guest\nname: mover\nspec: {request: {cpu: 1, memory_mib: 128}}\n"
PING_INTERVAL = 0.02


def _podium(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"podium {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _guest(env: dict[str, str]) -> dict[str, Any]:
    items = json.loads(_podium(env, "get", "guest", "mover", "-o", "json"))["items"]
    return dict(items[0])


def _wait_running(env: dict[str, str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        guest = _guest(env)
        if guest["status"]["state"] == "running":
            return guest
        time.sleep(0.5)
    raise SystemExit(f"guest not running after {timeout:g} s")


def _longest_gap(output: str) -> float:
    """Longest run of missing echo replies, in ms, from ping's icmp_seq numbers."""
    seqs = sorted({int(s) for s in re.findall(r"icmp_seq=(\d+)", output)})
    if len(seqs) < 2:
        return float("nan")
    gap = max(b - a for a, b in itertools.pairwise(seqs))
    return (gap - 1) * PING_INTERVAL * 1000


def run(runs: int, hosts: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-migration-"))
    name = f"bm{os.getpid() % 10000}"
    env = {**os.environ, "PODIUM_LAB_DIR": str(tmp), "COLUMNS": "200"}
    samples: list[dict[str, float]] = []
    try:
        up = json.loads(_podium(env, "lab", "up", "--hosts", str(hosts), "--driver", "qemu",
                                "--json", "--name", name))  # fmt: skip
        env["PODIUM_CONFIG"] = up["config"]
        _podium(env, "apply", "-f", "-", stdin=GUEST)
        guest = _wait_running(env)
        ip = guest["status"]["nics"][0]["ip"].split("/")[0]
        for i in range(runs):
            source = _guest(env)["status"]["host"]
            target = next(h for h in up["hosts"] if h != source)
            pinger = subprocess.Popen(  # bounded: at most 60 s of echoes
                ["ip", "netns", "exec", f"pdm-{name}-fab", "ping", "-n", "-i",
                 str(PING_INTERVAL), "-w", "60", ip],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            time.sleep(1)
            started = time.monotonic()
            result = json.loads(_podium(env, "guest", "migrate", "mover", "--to", target, "--json"))
            wall = time.monotonic() - started
            time.sleep(1)
            pinger.terminate()
            output, _ = pinger.communicate(timeout=10)
            samples.append({
                "podium_total_s": float(result["total_s"]),
                "cli_wall_s": wall,
                "qemu_total_s": float(result["qemu_total_ms"]) / 1000,
                "qemu_downtime_ms": float(result["qemu_downtime_ms"]),
                "switchover_ms": float(result["switchover_ms"]),
                "ping_gap_ms": _longest_gap(output),
            })  # fmt: skip
            print(f"run {i + 1}/{runs}: {samples[-1]}", file=sys.stderr)
    finally:
        subprocess.run([*PODIUM, "lab", "down", "--name", name], env=env, capture_output=True,
                       timeout=300, check=False)  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)
    return _summary(samples, runs, hosts)


def _summary(samples: list[dict[str, float]], runs: int, hosts: int) -> dict[str, Any]:
    # A run whose QEMU figures came back empty (seen: 0 ms total) must not drag the
    # medians of QEMU's own figures down; it still counts for podium's and the pings'.
    with_qemu = [s for s in samples if s["qemu_total_s"] > 0]

    def p50(key: str) -> float:
        pool = with_qemu if key.startswith("qemu_") else samples
        return round(statistics.median(s[key] for s in pool), 3) if pool else float("nan")

    def worst(key: str) -> float:
        return round(max(s[key] for s in samples), 3)

    return {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.machine()}",
        "runs": runs,
        "hosts": hosts,
        "guest_memory_mib": 128,
        "runs_with_qemu_figures": len(with_qemu),
        "podium_total_s_p50": p50("podium_total_s"),
        "qemu_total_s_p50": p50("qemu_total_s"),
        "ratio_podium_over_qemu_p50": round(p50("podium_total_s") / p50("qemu_total_s"), 2)
        if p50("qemu_total_s")
        else None,
        "qemu_downtime_ms_p50": p50("qemu_downtime_ms"),
        "switchover_ms_p50": p50("switchover_ms"),
        "switchover_ms_max": worst("switchover_ms"),
        "ping_gap_ms_p50": p50("ping_gap_ms"),
        "ping_gap_ms_max": worst("ping_gap_ms"),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=5, help="migrations (back and forth)")
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        raise SystemExit("bench/migration.py needs root and QEMU (scripts/setup installs it)")
    report = run(args.runs, args.hosts)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if key != "samples":
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
