"""A thin typed adapter over ``qemu.qmp.QMPClient``: one guest's monitor socket.

::

    idle ──connect──> connecting ──> connected ──(QEMU exits)──> lost ──close──> closed
                          │              └────────────────close───────────────────┘
                          └──(no greeting in time)──> closed (QmpError)

Commands run only while ``connected``; any other state raises :class:`QmpError`.
Events (``STOP``, ``RESUME``, ``SHUTDOWN``, ``POWERDOWN``) queue up in a listener and are
drained without waiting by :meth:`Monitor.drain_events`, so no task of ours runs per guest
(qemu.qmp's own reader task runs while connected).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qemu.qmp import EventListener, ExecInterruptedError, QMPClient, QMPError, Runstate

from podium.drivers.qemu._errors import QmpError

EVENTS = ("STOP", "RESUME", "SHUTDOWN", "POWERDOWN")


class MonitorState(enum.StrEnum):
    """The adapter's connection state (qemu.qmp's ``Runstate``, plus why it ended)."""

    IDLE = "idle"  # created, never connected
    CONNECTING = "connecting"  # socket open, waiting for the greeting
    CONNECTED = "connected"  # session up: commands run, events queue
    LOST = "lost"  # the peer hung up (QEMU exited or was killed); close() next
    CLOSED = "closed"  # closed by us; the adapter is done


@dataclass(frozen=True, slots=True)
class Event:
    """One QMP event: ``name`` (``STOP``...) and its ``data``."""

    name: str
    data: Mapping[str, Any]


def _open_unix(path: Path) -> socket.socket:
    """A connected unix socket; long paths go through ``/proc/self/fd`` (108-byte limit)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            sock.connect(str(path))
        else:
            folder = os.open(path.parent, os.O_PATH)
            try:
                sock.connect(f"/proc/self/fd/{folder}/{path.name}")
            finally:
                os.close(folder)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Commands(Protocol):
    """The part of :class:`Monitor` that migrations and backups use (tests pass fakes)."""

    name: str

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any: ...

    async def query_status(self) -> str: ...


class Monitor:
    """The QMP monitor of one QEMU. Use from one event loop."""

    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self.name = name
        self._client = QMPClient(name)
        self._listener = EventListener(EVENTS)
        self._client.register_listener(self._listener)
        self._closed = False
        self._connecting = False

    @property
    def state(self) -> MonitorState:
        if self._closed:
            return MonitorState.CLOSED
        runstate = self._client.runstate
        if runstate is Runstate.RUNNING:
            return MonitorState.CONNECTED
        if runstate is Runstate.DISCONNECTING:
            return MonitorState.LOST
        return MonitorState.CONNECTING if self._connecting else MonitorState.IDLE

    async def connect(self, *, timeout: float = 5.0) -> None:
        """Open the socket and negotiate. Raises :class:`QmpError` (the adapter is then closed).

        QEMU serves one QMP client at a time: a socket still held by another client (an
        agent that did not exit) shows as a timeout here.
        """
        if self.state is not MonitorState.IDLE:
            raise QmpError(f"{self.name}: QMP monitor is {self.state.value}, not idle")
        self._connecting = True
        try:
            sock = _open_unix(self.path)
            async with asyncio.timeout(timeout):
                await self._client.connect(sock)
        except (OSError, QMPError, TimeoutError) as err:
            await self.close()
            why = "no greeting (another client holds it?)" if isinstance(err, TimeoutError) else err
            raise QmpError(f"{self.name}: cannot connect to QMP at {self.path}: {why}") from err
        finally:
            self._connecting = False

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run one command; its return value. Raises :class:`QmpError`."""
        if self.state is not MonitorState.CONNECTED:
            raise QmpError(f"{self.name}: cannot run {command}: QMP monitor is {self.state.value}")
        try:
            async with asyncio.timeout(timeout):
                return await self._client.execute(command, arguments)
        except (QMPError, TimeoutError) as err:
            gone = isinstance(err, ExecInterruptedError) or self.state is not MonitorState.CONNECTED
            why = "QEMU hung up" if gone else (str(err) or "timed out")
            raise QmpError(f"{self.name}: {command} failed: {why}") from err

    async def query_status(self) -> str:
        """QEMU's run state: ``running``, ``paused``, ``shutdown``, ``inmigrate``..."""
        reply = await self.execute("query-status")
        return str(reply["status"])

    def drain_events(self) -> list[Event]:
        """Every event received since the last call, oldest first (never waits)."""
        self._client.events.clear()  # qemu.qmp's catch-all listener: keep its queue empty
        events = []
        for message in self._listener.clear():
            data = message.get("data")
            events.append(Event(str(message["event"]), data if isinstance(data, dict) else {}))
        return events

    async def close(self) -> None:
        """Disconnect (QEMU keeps running). Idempotent; never raises for a peer already gone."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(EOFError, OSError, QMPError):
            await self._client.disconnect()
        with contextlib.suppress(QMPError):
            self._client.remove_listener(self._listener)
