"""E2E fixtures: `podium server` and `podium agent` started through the CLI, killed by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import server as support

PODIUM = [sys.executable, "-m", "podium"]
PODIUM_SERVER = (*PODIUM, "server")


@dataclass
class Cluster:
    """A running server (and its data dir) for CLI tests."""

    data_dir: Path
    config: Path
    server_url: str
    procs: list[subprocess.Popen[bytes]]

    def podium(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run one CLI command against this cluster."""
        full_env = {
            **os.environ,
            "PODIUM_CONFIG": str(self.config),
            "COLUMNS": "200",
            **(env or {}),
        }
        return subprocess.run(
            [*PODIUM, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
            input=stdin, check=False,
        )  # fmt: skip

    def start_agent(self, name: str, *labels: str, cpu: int = 16) -> subprocess.Popen[bytes]:
        join = self.data_dir / f"join-{name}"
        made = self.podium("host", "token", "create", "--output", str(join))
        assert made.returncode == 0, made.stderr
        args = ["agent", "--server", self.server_url, "--token-file", str(join / "token"),
                "--name", name, "--driver", "sim", "--cpu", str(cpu)]  # fmt: skip
        for label in labels:
            args += ["--label", label]
        with (self.data_dir / f"agent-{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [*PODIUM, *args], stdout=log, stderr=log, start_new_session=True
            )
        self.procs.append(proc)
        return proc


def start_server(data_dir: Path, store: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `podium server` (the CLI) on a free port; return the process and its URL."""
    server = support.start_server(data_dir, store_url=store, args=extra, command=PODIUM_SERVER)
    return server.proc, server.url


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by PID: TERM, then KILL."""
    support.stop_server(support.ServerProcess("", Path(), proc))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    proc, url = start_server(tmp_path, f"sqlite:///{tmp_path / 'podium.db'}", "--host-ttl", "3")
    c = Cluster(tmp_path, tmp_path / "admin.conf", url, [proc])
    try:
        yield c
    finally:
        for p in reversed(c.procs):
            stop(p)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` returns something truthy; return it, or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
