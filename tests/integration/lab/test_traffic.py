"""Traffic accounting on a real 2-host qemu lab, read through ``podium traffic``.

A pinger floods two pongs for 30 s, one on its own host and one across the fabric; a
quiet guest says nothing. The agents' nftables counters (on each host's bridge) must
show both pairs at the rate the pings sent, the cross-host pair seen by both hosts, the
same-host pair by one, and no pair with the quiet guest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lab.conftest import PODIUM, LeakGuard, new_guard, require_netns
from tests.support.components import missing_component
from tests.support.guest_shell import guest_run
from tests.support.qemu_procs import qemu_processes

pytestmark = pytest.mark.slow

GUESTS = "".join(
    f"---\nkind: Guest\nname: {n}\nspec: {{request: {{cpu: 1, memory_mib: 128}}}}\n"
    for n in ("pinger", "pong-a", "pong-b", "quiet")
)
COUNT, EVERY, SIZE = 600, 0.05, 1000  # 30 s of pings, 1000 data bytes each
IP_BYTES = SIZE + 8 + 20  # what the counters count per packet: ICMP + IP headers


class Lab:
    def __init__(self, guard: LeakGuard, env: dict[str, str]) -> None:
        self.guard, self.env = guard, env

    def podium(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)  # fmt: skip

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        done = subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=self.env,
                              input=stdin, timeout=timeout, check=False)  # fmt: skip
        assert done.returncode == 0, f"podium {' '.join(args)}: {done.stderr}"
        return done.stdout

    def guests(self) -> dict[str, dict[str, Any]]:
        return {g["name"]: g for g in json.loads(self.ok("get", "guests", "-o", "json"))["items"]}

    def hosts(self) -> list[str]:
        return [h["name"] for h in json.loads(self.ok("get", "hosts", "-o", "json"))["items"]]

    def wait_running(self, count: int, timeout: float = 240) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        guests: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            guests = self.guests()
            states = [g["status"]["state"] for g in guests.values()]
            if len(states) == count and set(states) == {"running"}:
                return guests
            assert "failed" not in states, guests
            time.sleep(1)
        raise AssertionError(f"not all running after {timeout} s: {guests}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    for tool in ("qemu-system-x86_64", "qemu-img", "nft"):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed (scripts/setup installs it)")
    tmp = tmp_path_factory.mktemp("traffic")
    guard = new_guard(tmp)
    env = {**os.environ, "PODIUM_LAB_DIR": str(tmp), "PODIUM_QEMU_ACCEL": "tcg", "COLUMNS": "200"}
    lab = Lab(guard, env)
    up = lab.podium("lab", "up", "--hosts", "2", "--driver", "qemu", "--json",
                    "--name", guard.name, timeout=600)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        env["PODIUM_CONFIG"] = json.loads(up.stdout)["config"]
        yield lab
    finally:
        down = lab.podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
        assert down.returncode == 0, down.stderr
        assert leaks == [], leaks


def _ip(guest: dict[str, Any]) -> str:
    return str(guest["status"]["nics"][0]["ip"]).split("/")[0]


def _folder(guest: dict[str, Any]) -> Path:
    procs = qemu_processes(guest["status"]["uuid"])
    assert len(procs) == 1, procs
    return procs[0].cwd


def _sent(output: str) -> tuple[int, float]:
    """IP bytes both ways of one ping run, and its seconds (from the guest's clock)."""
    stats = re.search(r"(\d+) packets transmitted, (\d+) packets received", output)
    times = re.search(r"START=(\d+) END=(\d+)", output)
    assert stats and times, output
    packets = int(stats.group(1)) + int(stats.group(2))
    return packets * IP_BYTES, float(int(times.group(2)) - int(times.group(1)))


@pytest.mark.timeout(480)
def test_the_traffic_matrix_shows_who_talks_and_how_much(lab: Lab) -> None:
    lab.ok("apply", "-f", "-", stdin=GUESTS)
    guests = lab.wait_running(4)
    home = guests["pinger"]["status"]["host"]
    other = next(h for h in lab.hosts() if h != home)
    # one pong on the pinger's host, one across the fabric (a live migration if needed)
    where = {n: guests[n]["status"]["host"] for n in ("pong-a", "pong-b")}
    if where["pong-a"] == where["pong-b"]:
        lab.ok("guest", "migrate", "pong-b", "--to", other if where["pong-b"] == home else home)
        guests = lab.wait_running(4)
    pinger = guests["pinger"]
    near = next(n for n in ("pong-a", "pong-b") if guests[n]["status"]["host"] == home)
    far = next(n for n in ("pong-a", "pong-b") if n != near)
    assert guests[far]["status"]["host"] == other
    folder = _folder(pinger)
    flood = "".join(
        f"(S=$(date +%s); ping -q -c {COUNT} -i {EVERY} -s {SIZE} -w 60 {_ip(guests[n])} "
        f"> /tmp/{n}.out 2>&1; echo START=$S END=$(date +%s) >> /tmp/{n}.out) & "
        for n in (near, far)
    )
    status, out = guest_run(folder, f"mkdir -p /tmp; {flood}true", timeout=30)
    assert status == 0, out

    # Poll the matrix while the flood runs (default report interval: 10 s).
    peak: dict[tuple[str, str], float] = {}
    seen_on: dict[tuple[str, str], set[str]] = {}
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        matrix = json.loads(lab.ok("traffic", "--top", "0", "-o", "json"))
        for p in matrix["pairs"]:
            pair = (p["a"], p["b"])
            assert "quiet" not in pair, p  # the quiet guest talks to no one
            peak[pair] = max(peak.get(pair, 0.0), float(p["bytes_per_s"]))
            seen_on.setdefault(pair, set()).update(p["hosts"])
        time.sleep(2)

    results = {}
    for n in (near, far):
        status, out = guest_run(folder, f"cat /tmp/{n}.out", timeout=30)
        assert status == 0 and "END=" in out, out
        results[n] = _sent(out)
    for n, (sent, seconds) in results.items():
        pair = tuple(sorted(("pinger", n)))
        assert pair in peak, (n, peak)
        rate = sent / seconds  # what the pings sent on average, both directions
        print(
            f"{n}: pings {sent} B in {seconds:g} s = {rate:.0f} B/s; peak report {peak[pair]:.0f}"
        )
        # one whole 10 s report lies inside the 30 s flood: its rate is the ping rate
        # (the guest's clock counts whole seconds, hence the margin)
        assert 0.7 * rate <= peak[pair] <= 1.3 * rate, (n, peak[pair], rate, sent, seconds)
    hosts = {g["status"]["host"] for g in guests.values()}
    assert seen_on[tuple(sorted(("pinger", far)))] == hosts  # both ends' hosts saw it
    assert seen_on[tuple(sorted(("pinger", near)))] == {pinger["status"]["host"]}
    table = lab.ok("traffic")
    assert "GUEST A" in table
