"""Watching a QEMU from outside the driver: its second monitor, ``observe.sock``.

QEMU serves one client per QMP monitor, and the driver holds ``qmp.sock``; every QEMU
also listens on ``observe.sock`` in the guest's state folder, which the driver never
uses, so operators and checkers (the tests that hunt double runs) can ask it anything.
"""

from __future__ import annotations

from pathlib import Path

from podium.drivers.qemu._argv import OBSERVE_SOCKET
from podium.drivers.qemu._qmp import Monitor


async def observe_status(where: Path | str, *, timeout: float = 2.0) -> str:
    """QEMU's run status (``running``, ``paused``, ``inmigrate``, ``postmigrate``...) through
    the observer monitor of a guest's state folder, or of the socket itself (a path
    ending in ``.sock``; decided by name, so nothing blocks the event loop).

    Connects, asks, disconnects, within ``timeout`` seconds. Raises ``QmpError`` when
    no QEMU answers there (none runs, or another observer holds the socket).
    """
    path = Path(where)
    if path.suffix != ".sock":
        path = path / OBSERVE_SOCKET
    monitor = Monitor(path, name=f"observer of {path.parent.name}")
    try:
        await monitor.connect(timeout=timeout)
        reply = await monitor.execute("query-status", timeout=timeout)
        return str(reply["status"])
    finally:
        await monitor.close()
