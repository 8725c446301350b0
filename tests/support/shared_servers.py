"""Several ``podium server`` processes on one store, sharing the first one's CA and token.

- :func:`start_servers`: start ``count`` servers under ``root/s1..sN``; the first makes
  the CA and admin token, the others get copies, so one client config trusts them all.
- :func:`running_servers`: the same for a ``with`` block; every server killed by PID.
- :func:`config_for`: a client config that talks to one server only.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

from podium.client import ClientConfig
from tests.support import server as support

SHARED = ("ca.pem", "ca.key", "admin.conf")


def start_servers(
    root: Path, count: int, *, store_url: str, args: Sequence[str] = ()
) -> list[support.ServerProcess]:
    """Start ``count`` servers on ``store_url``; if one fails, kill those started, raise."""
    servers = [support.start_server(root / "s1", store_url=store_url, args=args)]
    try:
        for i in range(2, count + 1):
            data = root / f"s{i}"
            data.mkdir(parents=True, exist_ok=True)
            for name in SHARED:
                shutil.copy2(root / "s1" / name, data / name)
            servers.append(support.start_server(data, store_url=store_url, args=args))
    except BaseException:
        for s in servers:
            support.stop_server(s, signal.SIGKILL)
        raise
    return servers


@contextlib.contextmanager
def running_servers(
    root: Path, count: int, *, store_url: str, args: Sequence[str] = ()
) -> Iterator[list[support.ServerProcess]]:
    """:func:`start_servers` for the ``with`` block; all killed by PID after it."""
    servers = start_servers(root, count, store_url=store_url, args=args)
    try:
        yield servers
    finally:
        for s in servers:
            support.stop_server(s, signal.SIGKILL)


def config_for(server: support.ServerProcess) -> ClientConfig:
    """A client config for ``server`` alone (its URL, the shared CA and admin token)."""
    base = ClientConfig.load(str(server.config_path))
    return ClientConfig(server=server.url, ca_pem=base.ca_pem, token=base.token)
