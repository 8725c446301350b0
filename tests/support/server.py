"""Test support for the podium server: a real subprocess, or the app in-process.

- :func:`running_server` / :func:`start_server` / :func:`stop_server`: ``python -m
  podium.server`` on ``127.0.0.1:0`` with a temp data dir and a SQLite store; waits
  for the ready line; always killed by PID.
- :class:`StreamingASGITransport`: an httpx transport that runs an ASGI app in this
  event loop *and streams its response* (httpx's own ASGITransport buffers the whole
  body, which never ends for a watch stream). Closing the response disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import httpx

READY = "podium server listening on "
START_TIMEOUT = 30.0


class ServerProcess(NamedTuple):
    """A started server: ``url, config_path, proc = server`` unpacks it."""

    url: str
    config_path: Path
    proc: subprocess.Popen[bytes]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'podium.db'}"


def start_server(
    data_dir: Path,
    *,
    store_url: str | None = None,
    args: Sequence[str] = (),
    listen: str = "127.0.0.1:0",
    timeout: float = START_TIMEOUT,
    command: Sequence[str] = (sys.executable, "-m", "podium.server"),
) -> ServerProcess:
    """Start ``python -m podium.server`` (or ``command``) and wait for its ready line.

    stderr goes to ``data_dir/server.log`` (appended, so restarts keep history).
    Raises ``RuntimeError`` with the log tail if it exits or stays silent.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        *command,
        "--store", store_url or sqlite_url(data_dir),
        "--listen", listen,
        "--data-dir", str(data_dir),
        *args,
    ]  # fmt: skip
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = _read_ready_line(proc, proc.stdout, timeout, log_path)
    except BaseException:
        _kill(proc)
        raise
    url = line[len(READY) :].split(" ", 1)[0]
    return ServerProcess(url, data_dir / "admin.conf", proc)


def _read_ready_line(
    proc: subprocess.Popen[bytes], out: IO[bytes], timeout: float, log_path: Path
) -> str:
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.1):
                continue
            raw = out.readline()
            if not raw:
                log = log_path.read_text()[-3000:] if log_path.exists() else "(no log)"
                raise RuntimeError(f"podium server exited ({proc.wait()}):\n{log}")
            text = raw.decode().strip()
            if text.startswith(READY):
                return text
    raise RuntimeError(f"podium server did not print its ready line in {timeout:g} s")


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    if proc.stdout is not None:
        proc.stdout.close()


def stop_server(server: ServerProcess, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to the server (by PID), wait for it, return its exit status."""
    _kill(server.proc, sig)
    return server.proc.returncode


@contextlib.contextmanager
def running_server(
    data_dir: Path, *, store_url: str | None = None, args: Sequence[str] = ()
) -> Iterator[ServerProcess]:
    """A server for the ``with`` block; killed by PID (SIGKILL if SIGTERM is ignored)."""
    server = start_server(data_dir, store_url=store_url, args=args)
    try:
        yield server
    finally:
        stop_server(server, signal.SIGTERM)


# -- in-process ------------------------------------------------------------------------


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[bytes | None], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self._chunks = chunks
        self._task = task
        self._gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self._gone.set()  # the client disconnects
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Run an ASGI app per request in this loop; stream the response body as it is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 12345),
            "root_path": "",
        }
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        gone = asyncio.Event()
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as err:
                if not started.done():
                    started.set_exception(err)
                raise
            finally:
                chunks.put_nowait(None)

        task = asyncio.get_running_loop().create_task(run())
        start = await started
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        return httpx.Response(
            start["status"], headers=headers, stream=_Body(chunks, task, gone), request=request
        )
