"""Live migration over QMP: the destination's listening URI and the source's pre-copy loop.

::

    destination: QEMU -incoming defer -S ── migrate-incoming tcp:IP:0 ── query-migrate
                 (socket-address: the port the kernel picked) ──> "tcp:IP:PORT"
                 ... migration completed: QEMU "paused" ── activate: cont, announce-self
    source:      query-migrate (a migration in flight or done is followed, not restarted)
                 migrate-set-capabilities (auto-converge, events) ── migrate URI
                 query-migrate every POLL s ──> on_progress(MigrationProgress)
                   ├── completed ──> MigrationResult (QEMU's total-time, downtime)
                   └── failed | cancelled | no bytes moved for stall_timeout (migrate_cancel)
                       ──> MigrationError; QEMU resumes the source's vCPUs

Pure parsing (``progress``, ``result``, ``incoming_uri``) is separate from the loop, so it
is unit-tested without QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

from podium.drivers._protocol import MigrationError, MigrationProgress, MigrationResult
from podium.drivers.qemu._errors import QmpError
from podium.drivers.qemu._qmp import Commands

log = logging.getLogger("podium.drivers.qemu")

POLL = 0.15  # seconds between query-migrate samples
CANCEL_WAIT = 10.0  # how long a cancelled migration may take to settle
# QEMU's statuses while a migration is under way (MigrationStatus in qapi/migration.json).
IN_FLIGHT = frozenset(
    {
        "setup",
        "active",
        "pre-switchover",
        "device",
        "wait-unplug",
        "cancelling",
        "postcopy-active",
        "postcopy-paused",
        "postcopy-recover",
        "colo",
    }
)
CAPABILITIES = ("auto-converge", "events")
# announce-self's parameters (QEMU's defaults): RARPs from every NIC, so the switches on
# the way learn where the guest's MACs are now.
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


def listen_uri(listen: str) -> str:
    """``tcp:IP:0`` for ``migrate-incoming`` (the kernel picks the port). Raises
    :class:`MigrationError` if ``listen`` is not an IP address."""
    try:
        address = ipaddress.ip_address(listen)
    except ValueError as err:
        raise MigrationError(f"listen address {listen!r} is not an IP address") from err
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"tcp:{host}:0"


def incoming_uri(listen: str, reply: Mapping[str, Any]) -> str:
    """The URI a source sends to, from a destination's ``query-migrate`` reply."""
    for sock in reply.get("socket-address") or ():
        if sock.get("type") == "inet" and str(sock.get("port", "0")) != "0":
            return listen_uri(listen).removesuffix(":0") + f":{sock['port']}"
    raise MigrationError(f"QEMU reports no port it listens on for the migration: {dict(reply)}")


def progress(reply: Mapping[str, Any]) -> MigrationProgress:
    """One ``query-migrate`` reply as a :class:`MigrationProgress`."""
    ram = reply.get("ram") or {}
    return MigrationProgress(
        status=str(reply.get("status", "none")),
        transferred=int(ram.get("transferred", 0)),
        remaining=int(ram.get("remaining", 0)),
        total=int(ram.get("total", 0)),
        dirty_rate=float(ram.get("dirty-pages-rate", 0)) * int(ram.get("page-size", 4096)),
        expected_downtime_ms=float(reply.get("expected-downtime", 0)),
        elapsed_ms=float(reply.get("total-time", 0)),
    )


def result(uri: str, reply: Mapping[str, Any]) -> MigrationResult:
    """A completed migration's ``query-migrate`` reply as a :class:`MigrationResult`."""
    ram = reply.get("ram") or {}
    return MigrationResult(
        uri=uri,
        total_ms=float(reply.get("total-time", 0)),
        downtime_ms=float(reply.get("downtime", 0)),
        transferred=int(ram.get("transferred", 0)),
    )


def failure(reply: Mapping[str, Any]) -> str:
    """Why QEMU says a migration failed (its ``error-desc``), in one line."""
    return str(reply.get("error-desc") or f"migration {reply.get('status', 'failed')}")


async def listen(monitor: Commands, address: str) -> str:
    """Make a ``-incoming defer`` QEMU listen on ``address``; the URI to send to."""
    uri = listen_uri(address)
    await monitor.execute("migrate-incoming", {"uri": uri})
    return incoming_uri(address, await monitor.execute("query-migrate"))


async def incoming_done(monitor: Commands) -> tuple[bool, str]:
    """Whether a destination received its whole migration, and QEMU's statuses (for errors)."""
    status = await monitor.query_status()
    migration = str((await monitor.execute("query-migrate")).get("status", "none"))
    done = migration == "completed" and status in ("paused", "postmigrate", "running")
    return done, f"QEMU is {status}, migration {migration}"


async def migrate(
    monitor: Commands,
    uri: str,
    *,
    on_progress: Callable[[MigrationProgress], None] | None,
    stall_timeout: float,
    resume: bool = False,
    poll: float = POLL,
) -> MigrationResult:
    """Run (or follow) the source side of a migration to ``uri`` until it completes.

    Raises :class:`MigrationError` once QEMU says failed or cancelled, or after
    ``stall_timeout`` seconds without a byte sent (then cancelled); the source's vCPUs
    run again. ``QmpError`` if the monitor goes. Cancelled: the migration is cancelled,
    unless it completed first (then its result is returned). ``resume``: this QEMU was
    told to migrate to ``uri`` before (the agent restarted): follow that migration. Without
    it a "completed" or in-flight status is not ours (a QEMU that arrived by migration
    reports its incoming one as completed) and a new migration starts.
    """
    loop = asyncio.get_running_loop()
    reply = await monitor.execute("query-migrate")
    status = str(reply.get("status", "none"))
    if resume and status == "completed":
        return result(uri, reply)
    was_running = True
    if not resume or status not in IN_FLIGHT:  # none, failed/cancelled, or not ours
        was_running = await monitor.query_status() == "running"
        caps = [{"capability": c, "state": True} for c in CAPABILITIES]
        await monitor.execute("migrate-set-capabilities", {"capabilities": caps})
        try:
            await monitor.execute("migrate", {"uri": uri})
        except QmpError as err:
            raise MigrationError(f"{monitor.name}: migrate to {uri} refused: {err}") from err
    else:
        log.info("%s: following the migration already in flight (%s)", monitor.name, status)
    sent, moved_at = -1, loop.time()
    try:
        while True:
            reply = await monitor.execute("query-migrate")
            sample = progress(reply)
            if on_progress is not None:
                on_progress(sample)
            if sample.status == "completed":
                return result(uri, await _settled(monitor, reply))
            if sample.status not in IN_FLIGHT:
                await _resume(monitor, was_running)
                raise MigrationError(f"{monitor.name}: migration to {uri}: {failure(reply)}")
            if sample.transferred > sent:
                sent, moved_at = sample.transferred, loop.time()
            elif loop.time() - moved_at >= stall_timeout:
                final = await cancel(monitor, was_running)
                if final.get("status") == "completed":  # it finished as we gave up
                    return result(uri, final)
                raise MigrationError(
                    f"{monitor.name}: migration to {uri} moved no bytes for "
                    f"{stall_timeout:g} s ({sample.status}): cancelled"
                )
            await asyncio.sleep(poll)
    except asyncio.CancelledError:
        last: Mapping[str, Any] = {}
        with contextlib.suppress(QmpError):
            last = await cancel(monitor, was_running)
        if last.get("status") != "completed":
            raise
        # It completed before the cancel landed: the destination holds the guest now, and
        # a caller told "cancelled" would give it up. The result stands.
        uncancel()
        return result(uri, last)


async def _settled(monitor: Commands, reply: Mapping[str, Any]) -> Mapping[str, Any]:
    """The completed reply once QEMU has filled in its figures.

    QEMU 7.2 switches the status to ``completed`` before it computes ``total-time`` and
    ``downtime``: a query in between reads 0 for both (seen in 2 of 6 benchmark runs).
    """
    for _ in range(10):  # bounded: 10 x 20 ms
        if reply.get("total-time"):
            break
        await asyncio.sleep(0.02)
        with contextlib.suppress(QmpError):
            reply = await monitor.execute("query-migrate")
    return reply


def uncancel() -> None:
    """Withdraw the current task's pending cancellation (one that came too late to stop
    an operation that already took effect)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def cancel(monitor: Commands, was_running: bool = True) -> Mapping[str, Any]:
    """``migrate_cancel``; wait (bounded) until QEMU settles; its last ``query-migrate``."""
    await monitor.execute("migrate_cancel")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT
    while True:
        reply: Mapping[str, Any] = await monitor.execute("query-migrate")
        if reply.get("status") not in IN_FLIGHT or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL / 3)
    await _resume(monitor, was_running)
    return reply


async def _resume(monitor: Commands, was_running: bool) -> None:
    """QEMU restarts the vCPUs of a failed migration itself; make sure of it, since a
    source left stopped would be a guest that runs nowhere. Never after ``completed``:
    the destination owns the guest then."""
    if not was_running:
        return
    migration = (await monitor.execute("query-migrate")).get("status")
    if migration in ("failed", "cancelled") and await monitor.query_status() == "paused":
        log.warning("%s: vCPUs still stopped after a failed migration: cont", monitor.name)
        await monitor.execute("cont")
