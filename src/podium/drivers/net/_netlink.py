"""The thin typed edge over pyroute2: one netlink call in a namespace, errors as NetworkError.

::

    caller ──> netlink(netns, fn) ──> IPRoute(netns=..., flags=0) ──> fn(ipr) ──> result
                   │ (an asyncio loop runs in this thread: pyroute2's sync API cannot
                   │  nest its own loop, so the call runs on a one-off thread instead)
                   └─ NetlinkError / OSError ──> NetworkError("<what>: <why>")

    in_netns(netns, fn): fn() on a one-off thread that entered the namespace (setns
                         moves that thread alone): sysctls, sockets.

Namespaces are never created implicitly here (``flags=0``): a missing one is an error.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from podium._threads import call_in_thread
from podium.drivers.net._protocol import NetworkError

T = TypeVar("T")

NETNS_DIR = Path(pr_netns.NETNS_RUN_DIR)
THREAD_TIMEOUT = 30.0


def netns_path(name: str) -> Path:
    """The ``ip netns`` file of namespace ``name``."""
    return NETNS_DIR / name


def _in_thread(fn: Callable[[], T], what: str) -> T:
    try:
        return call_in_thread(fn, name=f"netlink: {what}", timeout=THREAD_TIMEOUT)
    except TimeoutError as err:
        raise NetworkError(f"{what}: no answer from the kernel in {THREAD_TIMEOUT:g} s") from err


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def describe(err: BaseException) -> str:
    """A short reason for a netlink or OS error."""
    if isinstance(err, NetlinkError):
        return f"{os.strerror(err.code)} (netlink error {err.code})"
    if isinstance(err, OSError) and err.errno is not None:
        return err.strerror or os.strerror(err.errno)
    return str(err) or type(err).__name__


def netlink(netns: str | None, fn: Callable[[Any], T], what: str) -> T:
    """Run ``fn(ipr)`` with an ``IPRoute`` in ``netns`` (None: this process's namespace).

    ``what`` names the operation in errors. Raises :class:`NetworkError`.
    """

    def call() -> T:
        if netns is not None and not netns_path(netns).exists():
            raise NetworkError(f"{what}: network namespace {netns} does not exist")
        try:
            with IPRoute(**({} if netns is None else {"netns": netns, "flags": 0})) as ipr:
                return fn(ipr)
        except NetworkError:
            raise
        except (NetlinkError, OSError, ValueError) as err:
            where = f" in {netns}" if netns else ""
            raise NetworkError(f"{what}{where}: {describe(err)}") from err

    return _in_thread(call, what) if _loop_running() else call()


def in_netns(netns: str, fn: Callable[[], T], what: str) -> T:
    """Run ``fn()`` on a one-off thread inside ``netns``. Raises :class:`NetworkError`."""

    def call() -> T:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY)
        except FileNotFoundError:
            raise NetworkError(f"{what}: network namespace {netns} does not exist") from None
        try:
            pr_netns.setns(fd, flags=0)
        except OSError as err:
            hint = "; it needs root" if err.errno == errno.EPERM else ""
            raise NetworkError(f"{what}: cannot enter {netns}: {describe(err)}{hint}") from err
        finally:
            os.close(fd)
        return fn()

    return _in_thread(call, what)
