"""A qemu lab through the CLI: real guests run inside their hosts' namespaces, then vanish.

Regression: agents run inside lab namespaces, which have no route to the package mirror,
so they could not build the guest image themselves and every guest failed; `lab up
--driver qemu` now builds (or reuses) it in the root namespace first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from podium.drivers.net import namespace_pids
from tests.integration.lab.conftest import PODIUM, new_guard, require_netns
from tests.support.components import missing_component

pytestmark = pytest.mark.slow
APP = (
    "kind: App\nname: web\nspec: {replicas: 2, spread: host, request: {cpu: 1, memory_mib: 128}}\n"
)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_qemu_lab_runs_guests_inside_their_hosts_then_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    require_netns()
    if shutil.which("qemu-system-x86_64") is None:
        missing_component("qemu-system-x86_64 is not installed (scripts/setup installs it)")
    guard = new_guard(tmp_path)
    # an empty image cache: the image must be built where the package mirror is reachable
    cache = tmp_path / "images"
    env = {**os.environ, "PODIUM_LAB_DIR": str(tmp_path), "PODIUM_IMAGE_CACHE": str(cache),
           "PODIUM_QEMU_ACCEL": "tcg", "COLUMNS": "200"}  # fmt: skip

    def podium(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=env,
                              input=stdin, timeout=600, check=False)  # fmt: skip

    up = podium("lab", "up", "--hosts", "2", "--driver", "qemu", "--json", "--name", guard.name)
    try:
        assert up.returncode == 0, up.stderr
        env["PODIUM_CONFIG"] = json.loads(up.stdout)["config"]
        assert podium("apply", "-f", "-", stdin=APP).returncode == 0
        deadline = time.monotonic() + 120
        guests: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            guests = json.loads(podium("get", "guests", "-o", "json").stdout)["items"]
            if len(guests) == 2 and all(g["status"]["state"] == "running" for g in guests):
                break
            assert not any(g["status"]["state"] == "failed" for g in guests), guests
            time.sleep(1)
        assert {g["status"]["state"] for g in guests} == {"running"}, guests
        assert len({g["status"]["host"] for g in guests}) == 2  # spread: host
        for g in guests:
            netns = f"{guard.prefix}{g['status']['host']}"
            inside = [_cmdline(pid) for pid in namespace_pids(netns)]
            qemus = [c for c in inside if c.startswith("qemu-system") and g["status"]["uuid"] in c]
            assert len(qemus) == 1, (netns, inside)
            assert f"-name {g['name']} " in qemus[0]
    finally:
        down = podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
    assert down.returncode == 0, down.stderr
    assert leaks == [], leaks
    uuids = [g["status"]["uuid"] for g in guests]
    alive = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()]
    assert not [pid for pid in alive if any(u in _cmdline(int(pid)) for u in uuids)]
