"""SQLite backend, the worker in a process of its own: the store's Python off this GIL.

::

    event loop ─submit─> outbox ─> sender thread ──pickled jobs──> child: receiver thread
                                                                      │ batches, Engine.run
    event loop <─settle─ reader thread <──outcomes, log rows─────── child: main thread

In a busy server the worker thread spends about half its time waiting for the GIL,
which the controllers hold, and the store's one connection then throttles everything;
the child runs the very same :class:`~podium.store._sqlite_worker.Engine` on a core of
its own. A write is acknowledged only after the child's COMMIT returned, as in the
thread. Jobs are partials of module functions (:mod:`podium.store._sqlite_ops`), so
they pickle. The child ends when the parent stops it or goes away (its end of the
socket closes, even on kill -9); if the child dies, every waiting and later job fails
with :class:`~podium.store.StoreUnavailable`. The pickles cross a private socketpair
between this process and its own child, never the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from podium.store._sqlite_db import logged_event
from podium.store._sqlite_worker import (
    Engine,
    Lanes,
    Outcome,
    Settle,
    Work,
    settle_later,
    take_batch,
)
from podium.store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

_Message = list[tuple[int, Work]] | None  # parent -> child: numbered jobs; None: stop


class ProcessWorker:
    """The engine in a child process (``python -m podium.store._sqlite_process``)."""

    def __init__(
        self, path: Path, busy_timeout: float, loop: asyncio.AbstractEventLoop, settle: Settle
    ) -> None:
        self._path = path
        self._loop = loop
        self._settle = settle
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )  # the child imports this very podium
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "podium.store._sqlite_process", str(theirs.fileno()),
                 str(path), repr(busy_timeout)],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._dead: StoreError | None = None
        self._outbox: queue.SimpleQueue[tuple[Work, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        name = f"podium-sqlite:{path}"
        self._sender = threading.Thread(target=self._send, name=f"{name}:send", daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"{name}:read", daemon=True)
        self._sender.start()
        self._reader.start()

    def submit(self, work: Work, future: asyncio.Future[Any]) -> None:
        if self._dead is not None:
            future.set_exception(self._dead)
            return
        self._outbox.put((work, future))

    def stop(self) -> None:
        self._outbox.put(None)

    def join(self) -> None:
        self._sender.join()
        self._reader.join()
        self._proc.wait()

    def _gone(self) -> StoreError:
        return self._dead or StoreUnavailable(
            f"SQLite store {self._path}: its worker process is gone; restart the server"
        )

    def _send(self) -> None:
        """Until stopped: send what is submitted, many jobs per message; once the child
        is gone, fail each job instead (nothing else would answer it)."""
        broken = stop = False
        while not stop:
            items, stop = take_batch(self._outbox)
            if not items:
                continue
            failed = [future for _, future in items]
            if not broken:
                message: list[tuple[int, Work]] = []
                for work, future in items:
                    number = next(self._ids)
                    self._waiting[number] = future
                    message.append((number, work))
                try:
                    self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
                    continue
                except OSError:
                    broken = True
                # take back what the reader did not already fail
                taken = (self._waiting.pop(number, None) for number, _ in message)
                failed = [future for future in taken if future is not None]
            outcomes: list[Outcome] = [(None, self._gone())] * len(failed)
            settle_later(self._loop, self._settle, failed, outcomes)
        if not broken:
            with contextlib.suppress(OSError):
                self._conn.send_bytes(pickle.dumps(None))

    def _read(self) -> None:
        try:
            while True:
                numbers, done, first, rows = pickle.loads(self._conn.recv_bytes())  # noqa: S301
                futures = [self._waiting.pop(n) for n in numbers]
                events = [logged_event(row) for row in rows]
                settle_later(self._loop, self._settle, futures, done, first=first, events=events)
        except (EOFError, OSError):
            pass
        code = self._proc.wait()
        if self._waiting or code != 0:
            self._dead = StoreUnavailable(
                f"SQLite store {self._path}: its worker process exited (code {code}); "
                "restart the server (the file keeps every acknowledged write)"
            )
            log.error("%s", self._dead)
        taken = (self._waiting.pop(n, None) for n in list(self._waiting))
        failed = [future for future in taken if future is not None]
        if failed:
            outcomes: list[Outcome] = [(None, self._gone())] * len(failed)
            settle_later(self._loop, self._settle, failed, outcomes)
        with contextlib.suppress(OSError):
            self._conn.close()


def _picklable(outcomes: list[tuple[Any, BaseException | None]]) -> list[Any]:
    """The outcomes, with any error that will not pickle replaced by a StoreError."""
    out: list[Any] = []
    for result, error in outcomes:
        sent = error
        if error is not None:
            try:
                pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
            except Exception:
                sent = StoreError(f"{type(error).__name__}: {error}")
        out.append((result, sent))
    return out


def _child(fd: int, path: str, busy_timeout: float) -> None:
    """The worker process: receive jobs, run them in batches, send the outcomes back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    conn = Connection(fd)
    inbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()

    def receive() -> None:
        try:
            while (message := pickle.loads(conn.recv_bytes())) is not None:  # noqa: S301
                inbox.put(message)
        except (EOFError, OSError):
            pass  # the parent is gone: finish what came, then end
        inbox.put(None)

    threading.Thread(target=receive, name="receive", daemon=True).start()
    engine = Engine(Path(path), busy_timeout)
    lanes = Lanes(inbox, lambda item: item[1])
    try:
        while (items := lanes.next_batch()) is not None:
            result = engine.run([work for _, work in items])
            numbers = [number for number, _ in items]
            payload = (numbers, result.outcomes, result.first, result.rows)
            try:
                data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
            except Exception:
                payload = (numbers, _picklable(result.outcomes), result.first, result.rows)
                data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
            conn.send_bytes(data)
    except OSError:
        pass  # the parent is gone
    finally:
        engine.close()


if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
