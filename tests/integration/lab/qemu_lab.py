"""A qemu lab driven through the CLI as an operator would: shared by the acceptance tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.drivers.net import kernel_filters_vlans
from podium.lab._ovs import ovs_available
from tests.integration.lab.conftest import PODIUM, LeakGuard, new_guard, require_netns
from tests.support.components import missing_component
from tests.support.qemu_procs import qemu_processes


@dataclass
class Lab:
    guard: LeakGuard
    env: dict[str, str]
    fabric_ns: str
    info: dict[str, Any] = field(default_factory=dict)

    def podium(self, *args: str, stdin: str | None = None, timeout: float = 300):
        return subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=self.env,
                              input=stdin, timeout=timeout, check=False)  # fmt: skip

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        done = self.podium(*args, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, f"podium {' '.join(args)}: {done.stderr}"
        return done.stdout

    def guests(self) -> dict[str, dict[str, Any]]:
        items = json.loads(self.ok("get", "guests", "-o", "json"))["items"]
        return {g["name"]: g for g in items}

    def wait_running(self, names: set[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        guests: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            guests = self.guests()
            states = {n: guests[n]["status"]["state"] for n in names if n in guests}
            if len(states) == len(names) and set(states.values()) == {"running"}:
                return guests
            failed = {n: guests[n]["status"] for n, s in states.items() if s == "failed"}
            assert not failed, failed
            time.sleep(1)
        raise AssertionError(f"not all running after {timeout} s: {guests}")

    def folder(self, guest: dict[str, Any]) -> Path:
        """The state folder of the guest's running QEMU (its working directory)."""
        procs = [p for p in qemu_processes(guest["status"]["uuid"]) if not p.incoming]
        procs = procs or qemu_processes(guest["status"]["uuid"])
        assert len(procs) == 1, procs
        return procs[0].cwd


@contextlib.contextmanager
def qemu_lab(
    tmp: Path,
    *up_args: str,
    tools: tuple[str, ...] = ("qemu-system-x86_64", "qemu-img"),
    vlans: bool = False,
) -> Iterator[Lab]:
    """A qemu lab (``podium lab up --driver qemu UP_ARGS``) under ``tmp``, taken down
    after, failing the test if anything of it is left (its leak guard). ``vlans``: the
    test puts guests on VLANs, so the hosts need a switch that carries them."""
    require_netns()
    for tool in tools:
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed (scripts/setup installs it)")
    if vlans and not (ovs_available() or kernel_filters_vlans()):
        missing_component(
            "guest VLANs need Open vSwitch on a kernel without bridge VLAN filtering "
            "(scripts/setup installs openvswitch-switch)"
        )
    guard = new_guard(tmp)
    env = {**os.environ, "PODIUM_LAB_DIR": str(tmp), "PODIUM_QEMU_ACCEL": "tcg", "COLUMNS": "200"}
    lab = Lab(guard, env, f"{guard.prefix}fab")
    up = lab.podium("lab", "up", *up_args, "--driver", "qemu", "--json",
                    "--name", guard.name, timeout=600)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        lab.info = json.loads(up.stdout)
        env["PODIUM_CONFIG"] = lab.info["config"]
        yield lab
    finally:
        down = lab.podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
        assert down.returncode == 0, down.stderr
        assert leaks == [], leaks
