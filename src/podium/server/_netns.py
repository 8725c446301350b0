"""Listening sockets inside another network namespace (``--listen-netns NETNS@HOST:PORT``).

::

    server process (root namespace)
        └─ short-lived thread ── setns(/run/netns/NETNS) ── socket() + bind() ── exits
                                                               │
        uvicorn <── the socket (it keeps NETNS: a socket's namespace is fixed at creation)

Only that thread ever enters the namespace (``setns(2)`` moves the calling thread
alone), so the rest of the process, its other sockets and its children stay where
they are.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

from podium._threads import call_in_thread
from podium.server._settings import ListenAddress, NetnsListen, ServerError

NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
BIND_TIMEOUT = 10.0


def netns_path(name: str) -> Path:
    """Where ``ip netns`` keeps the namespace ``name``. Raises :class:`ServerError`."""
    for folder in NETNS_DIRS:
        path = folder / name
        if path.exists():
            return path
    raise ServerError(
        f"cannot listen in network namespace {name!r}: it does not exist "
        "(ip netns list shows those there are; podium lab up makes them)"
    )


def bind_in_netns(
    where: NetnsListen, bind: Callable[[ListenAddress, str], socket.socket]
) -> socket.socket:
    """Call ``bind(address, text)`` from a thread that entered ``where.netns``.

    Raises :class:`ServerError` (missing namespace, no permission, address not there).
    """
    from pyroute2 import netns as pr_netns  # noqa: PLC0415 (only servers that need it)

    path = netns_path(where.netns)

    def enter_and_bind() -> socket.socket:
        fd = os.open(path, os.O_RDONLY)
        try:
            pr_netns.setns(fd, flags=0)
            return bind(where.address, str(where))
        finally:
            os.close(fd)

    try:
        return call_in_thread(enter_and_bind, name=f"bind-in-{where.netns}", timeout=BIND_TIMEOUT)
    except ServerError:
        raise
    except TimeoutError as err:
        raise ServerError(
            f"cannot listen on {where}: entering the namespace did not finish"
        ) from err
    except OSError as err:
        if err.errno == errno.EPERM:
            raise ServerError(
                f"cannot listen on {where}: entering a network namespace needs root (CAP_SYS_ADMIN)"
            ) from err
        raise ServerError(f"cannot listen on {where}: {err}") from err
    except Exception as err:
        raise ServerError(f"cannot listen on {where}: {err}") from err
