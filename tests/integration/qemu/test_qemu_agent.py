"""Agent + QemuDriver end to end against a real server: a guest applied runs as a real
QEMU, and survives its agent being restarted (a new Agent and QemuDriver in-process),
then killed with -9 and started again as a ``podium agent --driver qemu`` process.
Every time the same QEMU (same PID) keeps running and is re-adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podium.agent import Agent
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from podium.drivers.qemu import Image, QemuDriver
from tests.integration.qemu.conftest import CAPACITY, qemu_pids
from tests.support.server import running_server

pytestmark = pytest.mark.slow

HOST = "qh1"
GUEST = {
    "kind": "Guest",
    "name": "vm",
    "spec": {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}},
}


async def wait_for(client: AsyncPodiumClient, kind: str, check: Any, timeout: float = 60) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            items, _ = await client.list(kind)
            found = check({i["name"]: i for i in items})
            if found:
                return found
            await asyncio.sleep(0.1)


def host_ready(items: dict[str, Any]) -> bool:
    host = items.get(HOST)
    return host is not None and host["status"]["state"] == "ready"


def guest_running(items: dict[str, Any]) -> Any:
    guest = items.get("vm")
    return guest if guest and guest["status"]["state"] == "running" else None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@contextlib.asynccontextmanager
async def agent_in_process(
    config: ClientConfig, token: str, driver: QemuDriver, tokens: list[str]
) -> AsyncIterator[Agent]:
    link = AgentLink(config.server, token, config.ca_pem)
    agent = Agent(HOST, link, driver, capacity=CAPACITY, on_host_token=tokens.append)
    task = asyncio.create_task(agent.run(), name=f"agent-{HOST}")
    try:
        yield agent
    finally:  # as if the agent died: nothing is stopped
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.close()
        await driver.close()


def agent_process(url: str, token_file: Path, base: Path, image: Image) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PODIUM_IMAGE_CACHE": str(image.path.parent),
        "PODIUM_QEMU_ACCEL": "tcg",
    }
    argv = [
        sys.executable, "-m", "podium", "agent",
        "--server", url, "--token-file", str(token_file), "--name", HOST,
        "--driver", "qemu", "--data-dir", str(base),
        "--cpu", str(CAPACITY.cpu), "--memory-mib", str(CAPACITY.memory_mib),
    ]  # fmt: skip
    with (base / "agent.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)


async def test_the_guest_survives_agent_restarts_and_kill_9(
    guest_image: Image, tmp_path: Path, make_driver: Callable[..., QemuDriver]
) -> None:
    base = tmp_path / "agent"
    base.mkdir()

    def driver() -> QemuDriver:
        return make_driver(name=HOST, state_dir=base / HOST, volumes_dir=base / "volumes")

    agents: list[subprocess.Popen[bytes]] = []
    qemu_pid = 0
    with running_server(tmp_path / "server") as (url, config_path, _):
        config = ClientConfig.load(str(config_path))
        try:
            async with AsyncPodiumClient(config) as client:
                join = (await client.create_token("join", ttl=600))["token"]
                tokens: list[str] = []
                first = driver()
                async with agent_in_process(config, join, first, tokens):
                    await wait_for(client, "hosts", host_ready)
                    await client.apply([GUEST], source="vm.yaml")
                    guest = await wait_for(client, "guests", guest_running)
                    qemu_pid = first.pid("vm") or 0
                    args = Path(f"/proc/{qemu_pid}/cmdline").read_bytes().split(b"\0")
                    assert args[args.index(b"-uuid") + 1].decode() == guest["status"]["uuid"]
                    assert args[args.index(b"-name") + 1] == b"vm"
                epoch = guest["status"]["epoch"]
                assert alive(qemu_pid) and tokens

                # 1. a new Agent with a new QemuDriver in this process re-adopts it
                second = driver()
                async with agent_in_process(config, tokens[-1], second, tokens):
                    await asyncio.sleep(1.5)  # registered again, several reconcile passes
                    guest = await wait_for(client, "guests", guest_running)
                    assert guest["status"]["epoch"] == epoch
                    assert second.pid("vm") == qemu_pid

                # 2. `podium agent --driver qemu`, killed with -9, then started again
                token_file = base / "token"
                token_file.write_text(tokens[-1] + "\n")
                (base / "ca.pem").write_text(config.ca_pem or "")
                for _ in range(2):
                    agents.append(agent_process(url, token_file, base, guest_image))
                    await asyncio.sleep(3)  # joined, adopted, reconciled a few times
                    assert agents[-1].poll() is None, (base / "agent.log").read_text()
                    guest = await wait_for(client, "guests", guest_running)
                    assert guest["status"]["epoch"] == epoch and guest["status"]["host"] == HOST
                    assert set(qemu_pids(str(base))) == {qemu_pid}  # adopted, not restarted
                    agents[-1].send_signal(signal.SIGKILL)
                    agents[-1].wait(10)
                    assert alive(qemu_pid)  # its own session: the agent's death spares it
        finally:
            for proc in agents:
                proc.kill()
                proc.wait()
            if qemu_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(qemu_pid, signal.SIGKILL)
