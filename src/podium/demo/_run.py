"""`podium demo`: a whole cluster on the embedded store, one host killed, failover measured.

::

    temp data dir ──> podium server (subprocess, SQLite, TLS) <── N sim agents (this process,
                                        ^                          each over HTTPS with its token)
                                        └── apply apps ── wait all running ── kill busiest host
                                            ── wait its guests running elsewhere ── report
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podium.agent import Agent
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from podium.drivers import SimDriver
from podium.model import Resources

HOST_CAPACITY = Resources(cpu=16, memory_mib=32768, iops=20000, net_mbps=10000)
SERVER_START_TIMEOUT = 30.0
POLL = 0.2


class DemoError(Exception):
    """The demo could not complete; the message says where it stopped."""


@dataclass
class DemoReport:
    """What `podium demo --json` prints."""

    hosts: int
    guests_total: int
    guests_running: int = 0
    failed_host: str = ""
    failed_host_guests: int = 0
    failover_seconds: float = 0.0  # kill -> every guest of the failed host running elsewhere
    detection_seconds: float = 0.0  # kill -> host declared lost (lease expiry)
    initial_start_seconds: float = 0.0  # apply -> every guest running
    host_ttl_seconds: int = 0
    double_runs_seen: int = 0  # samples where one guest ran on two hosts (must be 0)
    store: str = ""
    config: str = ""
    apps: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    driver: str = "sim"
    extra: dict[str, Any] = field(default_factory=dict)  # qemu: ping, migration, backup

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str, int, int], None]  # phase, done, total


def demo_apps(hosts: int, guests: int) -> list[dict[str, Any]]:
    """Three apps summing to ``guests``: spread replicas that survive one host loss."""
    if hosts < 2:
        raise DemoError("the demo needs at least 2 hosts (one of them is killed)")
    if guests < 1:
        raise DemoError("the demo needs at least 1 guest")
    web = min(hosts - 1, max(1, guests // 4))
    db = min(2, guests - web) if guests - web > 0 else 0
    batch = guests - web - db
    small = {"cpu": 1, "memory_mib": 512, "iops": 100, "net_mbps": 50}
    apps = [
        ("web", web, "host", 100, small),
        ("db", db, "rack", 200, {"cpu": 2, "memory_mib": 1024, "iops": 500, "net_mbps": 100}),
        ("batch", batch, None, 0, small),
    ]
    docs = []
    for name, replicas, spread, priority, request in apps:
        if replicas <= 0:
            continue
        spec: dict[str, Any] = {
            "replicas": replicas,
            "image": "tiny",
            "request": request,
            "priority": priority,
        }
        if spread:
            spec["spread"] = spread
        docs.append({"kind": "App", "name": name, "spec": spec})
    return docs


def check_capacity(hosts: int, apps: list[dict[str, Any]]) -> None:
    """Refuse early when the guests cannot fit on ``hosts - 1`` hosts (after the kill)."""
    need = Resources()
    for doc in apps:
        request = Resources.from_dict(doc["spec"]["request"])
        for _ in range(doc["spec"]["replicas"]):
            need = need + request
    have = HOST_CAPACITY.as_tuple()
    worst = max(n / h for n, h in zip(need.as_tuple(), have, strict=True) if h)
    if math.ceil(worst) > hosts - 1:
        raise DemoError(
            f"{sum(d['spec']['replicas'] for d in apps)} guests need about "
            f"{math.ceil(worst)} hosts "
            f"after one fails; use --hosts {math.ceil(worst) + 1} or fewer --guests"
        )


@contextlib.asynccontextmanager
async def _server(data_dir: Path, store: str, host_ttl: int) -> AsyncIterator[ClientConfig]:
    """Start `podium server` as a subprocess; stop it (by PID) on exit."""
    cmd = [
        sys.executable, "-m", "podium.server",
        "--store", store,
        "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir),
        "--host-ttl", str(host_ttl),
    ]  # fmt: skip
    log = (data_dir / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(SERVER_START_TIMEOUT):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        raise DemoError(
                            f"podium server exited early; see {data_dir / 'server.log'}:\n"
                            + (data_dir / "server.log").read_text()[-2000:]
                        )
                    if "listening on" in line:
                        break
        except TimeoutError as err:
            raise DemoError(f"podium server did not start in {SERVER_START_TIMEOUT:.0f} s") from err
        yield ClientConfig.load(str(data_dir / "admin.conf"))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


class _Host:
    """One simulated host: its driver, agent task and link, all in this process."""

    def __init__(self, name: str, config: ClientConfig, token: str, labels: dict[str, str]) -> None:
        self.name = name
        self.token = token
        self.link = AgentLink(config.server, token, config.ca_pem)
        self.driver = SimDriver(name=name, capacity=HOST_CAPACITY)
        self.agent = Agent(
            name,
            self.link,
            self.driver,
            capacity=HOST_CAPACITY,
            labels=labels,
            on_host_token=self._keep_token,
        )
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def _keep_token(self, token: str) -> None:
        self.token = token

    def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{self.name}")

    async def kill(self) -> None:
        """Crash the host: the agent stops without a goodbye, its guests die with it."""
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.driver.crash()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.task and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.link.close()


async def wait_running(
    client: AsyncPodiumClient, total: int, phase: str, *, progress: Progress, timeout: float,
    doubles: Callable[[], int], report: DemoReport, avoid: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Poll until every guest runs (and none on ``avoid``, the killed host).

    ``doubles`` counts guests seen running twice right now (added to the report).
    """
    deadline = time.monotonic() + timeout
    while True:
        guests, _ = await client.list("Guest")
        running = [
            g for g in guests if g["status"]["state"] == "running" and g["status"]["host"] != avoid
        ]
        report.double_runs_seen += doubles()
        progress(phase, len(running), total)
        if len(running) == total and len(guests) == total:
            return guests
        if time.monotonic() > deadline:
            stuck = [f"{g['name']}: {g['status']['message']}" for g in guests if g not in running]
            raise DemoError(
                f"{phase}: only {len(running)}/{total} running after {timeout:.0f} s; "
                + "; ".join(stuck[:5])
            )
        await asyncio.sleep(POLL)


def _double_runs(hosts: list[_Host]) -> int:
    """Hunt for invariant 1: one guest uid running on two hosts at the same instant."""
    seen: set[str] = set()
    doubles = 0
    for host in hosts:
        for uid in host.driver.running_uids():
            doubles += uid in seen
            seen.add(uid)
    return doubles


async def run_demo(
    *, hosts: int, guests: int, driver: str = "sim", data_dir: Path | None = None,
    host_ttl: int = 3, progress: Progress = lambda *_: None, timeout: float = 90.0,
) -> DemoReport:  # fmt: skip
    """Run the whole demo; always stops what it started."""
    if driver == "qemu":
        from podium.demo._qemu import run_qemu_demo  # noqa: PLC0415

        return await run_qemu_demo(
            hosts=hosts, guests=guests, host_ttl=host_ttl, progress=progress,
            timeout=max(timeout, 300.0),
        )  # fmt: skip
    if driver != "sim":
        raise DemoError(f"unknown driver {driver!r}: expected sim or qemu")
    apps = demo_apps(hosts, guests)
    check_capacity(hosts, apps)
    temp = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="podium-demo-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{root / 'podium.db'}"
    total = sum(a["spec"]["replicas"] for a in apps)
    report = DemoReport(hosts=hosts, guests_total=total, host_ttl_seconds=host_ttl, store=store,
                        config=str(root / "admin.conf"),
                        apps={a["name"]: a["spec"]["replicas"] for a in apps})  # fmt: skip
    nodes: list[_Host] = []
    try:
        progress("starting server", 0, 1)
        async with _server(root, store, host_ttl) as config, AsyncPodiumClient(config) as client:
            progress("starting server", 1, 1)
            join = (await client.create_token("join", ttl=600))["token"]
            for i in range(hosts):
                labels = {"rack": f"r{i % 2 + 1}", "site": "s1"}
                nodes.append(_Host(f"host-{i + 1}", config, join, labels))
            for node in nodes:
                node.start()
            await _wait_hosts(client, hosts, progress, timeout)

            started = time.monotonic()
            await client.apply(apps, source="podium demo")
            placed = await wait_running(
                client, total, "starting guests", progress=progress, timeout=timeout,
                doubles=lambda: _double_runs(nodes), report=report,
            )  # fmt: skip
            report.initial_start_seconds = round(time.monotonic() - started, 3)

            victim_name, victim_guests = _busiest(placed)
            victim = next(n for n in nodes if n.name == victim_name)
            report.failed_host, report.failed_host_guests = victim_name, len(victim_guests)
            progress(f"killing {victim_name}", 0, 1)
            killed = time.monotonic()
            await victim.kill()
            detect = asyncio.create_task(_wait_lost(client, victim_name))
            try:
                after = await wait_running(
                    client, total, f"failing over {victim_name}", progress=progress,
                    timeout=timeout, doubles=lambda: _double_runs(nodes), report=report,
                    avoid=victim_name,
                )  # fmt: skip
                report.failover_seconds = round(time.monotonic() - killed, 3)
                report.detection_seconds = round(await detect - killed, 3)
            finally:
                detect.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await detect
            moved = {g["name"]: g["status"]["host"] for g in after if g["name"] in victim_guests}
            if any(h == victim_name for h in moved.values()):
                raise DemoError(f"guests still on the failed host: {moved}")
            report.guests_running = sum(1 for g in after if g["status"]["state"] == "running")
            events, _ = await client.events(limit=1000)
            report.events = failover_story(events)
            for node in nodes:  # before the server stops, so no agent retries against it
                await node.close()
    finally:
        for node in nodes:
            await node.close()
        if temp:
            shutil.rmtree(root, ignore_errors=True)
    return report


async def _wait_hosts(
    client: AsyncPodiumClient, count: int, progress: Progress, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items, _ = await client.list("Host")
        ready = sum(1 for h in items if h["status"]["state"] == "ready")
        progress("hosts joining", ready, count)
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"only {ready}/{count} hosts joined in {timeout:.0f} s")
        await asyncio.sleep(POLL)


async def _wait_lost(client: AsyncPodiumClient, host: str) -> float:
    while True:
        item = await client.get("Host", host)
        if item["status"]["state"] == "lost":
            return time.monotonic()
        await asyncio.sleep(0.05)


def failover_story(events: list[dict[str, Any]]) -> list[str]:
    """The failover in a few lines: lost hosts, then rebinds grouped by destination."""
    lines = [
        f"{e['reason']} {e['name']}: {e['message']}" for e in events if e["reason"] == "HostLost"
    ]
    moved: dict[str, list[str]] = {}
    for e in events:
        if e["reason"] == "GuestRebound":
            moved.setdefault(e["message"].split(" to ")[-1].split(" ")[0], []).append(e["name"])
    for host, names in sorted(moved.items()):
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"GuestRebound to {host}: {shown}")
    warnings = [
        f"{e['reason']} {e['name']}: {e['message']}"
        for e in events
        if e["type"] == "Warning" and e["reason"] != "HostLost"  # listed above already
    ]
    return lines + warnings[-5:]


def _busiest(guests: list[dict[str, Any]]) -> tuple[str, list[str]]:
    by_host: dict[str, list[str]] = {}
    for g in guests:
        by_host.setdefault(g["status"]["host"], []).append(g["name"])
    name = max(sorted(by_host), key=lambda h: len(by_host[h]))
    return name, by_host[name]


def default_data_dir() -> Path | None:
    """``PODIUM_DEMO_DIR`` if set (keeps the demo's files), else a temp dir removed after."""
    value = os.environ.get("PODIUM_DEMO_DIR")
    return Path(value) if value else None
