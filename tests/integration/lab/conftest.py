"""Fixtures for lab tests: real namespaces, bridges, veths, taps, processes — and a leak guard.

Every test here works under a unique lab name (``t`` + 6 hex digits), so its namespaces
are ``pdm-<name>-*`` and its processes carry its own temp dir on their command line.
:class:`LeakGuard` fails the test that leaves any of those behind, after removing them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podium.drivers.net import (
    delete_link,
    delete_namespace,
    links,
    list_namespaces,
    namespace_pids,
)
from tests.support.components import missing_component

PODIUM = [sys.executable, "-m", "podium"]
OUR_KINDS = {"bridge", "veth", "tun"}


def require_netns() -> None:
    """Skip without root or iproute2, except in CI (``CI=true``), where that is a failure."""
    why = None
    if os.geteuid() != 0:
        why = "lab tests need root (network namespaces)"
    elif shutil.which("ip") is None or shutil.which("ping") is None:
        why = "lab tests need iproute2 and iputils-ping (scripts/setup installs them)"
    elif not Path("/dev/net/tun").exists():
        why = "lab tests need /dev/net/tun"
    if why is not None:
        missing_component(why)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids_mentioning(marker: str) -> list[int]:
    me = os.getpid()
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and int(p) != me and marker in _cmdline(int(p))
    ]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def root_links() -> set[str]:
    """Bridges, veths and taps of the root namespace (the lab must never add any)."""
    return {link.name for link in links(None) if link.kind in OUR_KINDS}


@dataclass
class LeakGuard:
    """What one test (or module) may create; :meth:`check` removes leftovers and names them."""

    name: str  # the lab name: namespaces pdm-<name>-*
    marker: str  # a path every process of ours carries on its command line
    root_before: set[str] = field(default_factory=root_links)

    @property
    def prefix(self) -> str:
        return f"pdm-{self.name}-"

    def namespaces(self) -> list[str]:
        return list_namespaces(self.prefix)

    def check(self) -> list[str]:
        leaks: list[str] = []
        pids = set(_pids_mentioning(self.marker))
        for ns in self.namespaces():
            pids |= set(namespace_pids(ns))
        if pids:
            leaks += [f"process {p}: {_cmdline(p)[:120]}" for p in sorted(pids)]
            _kill(sorted(pids))
        for ns in self.namespaces():
            leaks.append(f"namespace {ns}")
            delete_namespace(ns)
        new_links = root_links() - self.root_before
        ours = {n for n in new_links if n.startswith(("pd", "up-", "fab0", "br0", "up0"))}
        for name in sorted(ours):
            leaks.append(f"root-namespace link {name}")
            delete_link(None, name)
        return leaks


def new_guard(tmp: Path) -> LeakGuard:
    return LeakGuard(name=f"t{secrets.token_hex(3)}", marker=str(tmp))


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[LeakGuard]:
    """A unique lab name for this test; the test fails if it leaks anything made under it."""
    require_netns()
    g = new_guard(tmp_path)
    yield g
    leaks = g.check()
    if leaks:
        pytest.fail("leaked (now removed): " + "; ".join(leaks), pytrace=False)


def netns_run(
    ns: str, *argv: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command inside namespace ``ns`` (bounded by ``timeout``)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def ping(ns: str, address: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    """Bounded ping from inside ``ns``: ``count`` echoes 0.2 s apart, 1 s wait each."""
    return netns_run(ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", address)


def ping_within(ns: str, address: str, seconds: float = 5.0) -> bool:
    """Whether a ping from ``ns`` gets an answer within ``seconds`` (one echo per try).

    For paths just brought up: the kernel signals carrier changes up to 1 s late.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ping(ns, address, count=1).returncode == 0:
            return True
    return False


@dataclass
class CliLab:
    """One lab driven through the CLI: ``up`` is what `podium lab up --json` returned."""

    guard: LeakGuard
    root: Path  # PODIUM_LAB_DIR
    up: subprocess.CompletedProcess[str]

    @property
    def name(self) -> str:
        return self.guard.name

    @property
    def dir(self) -> Path:
        return self.root / self.name

    def podium(
        self, *args: str, timeout: float = 90, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_LAB_DIR": str(self.root), "COLUMNS": "200"}
        if self.up.returncode == 0 and self.up.stdout.startswith("{"):
            env["PODIUM_CONFIG"] = json.loads(self.up.stdout)["config"]
        return subprocess.run(
            [*PODIUM, *args], capture_output=True, text=True, timeout=timeout, env=env,
            input=stdin, check=False,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "lab.json").read_text())  # type: ignore[no-any-return]
