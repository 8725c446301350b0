"""serve() in this process (memory store): startup errors, readiness, leadership, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.server import LeaderLoop, ServerError, ServerSettings, parse_listen, serve
from podium.state import ClusterState
from podium.store import BACKENDS, Store, StoreUnavailable
from podium.store.memory import MemoryStore


class DeadStore(MemoryStore):
    """A store whose backend never answers."""

    async def status(self):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("connection refused")


def settings(tmp_path: Path, **overrides: object) -> ServerSettings:
    base: dict[str, object] = {
        "store_url": "memory://",
        "listen": "127.0.0.1:0",
        "data_dir": tmp_path / "data",
        "heartbeat": 0.2,
        "leader_ttl": 2,
        "shutdown_timeout": 2,
    }
    return ServerSettings(**(base | overrides))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(
    cfg: ServerSettings, **kwargs: object
) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """Run serve() in a task; yield (ready line, task); cancel it at the end."""
    lines: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        serve(cfg, ready=lines.put_nowait, handle_signals=False, **kwargs)  # type: ignore[arg-type]
    )
    try:
        async with asyncio.timeout(20):
            getter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                getter.cancel()
                task.result()
                raise AssertionError("serve() returned before it was ready")
            yield getter.result(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ready_line_health_and_leadership_of_an_injected_runner(tmp_path: Path) -> None:
    started = asyncio.Event()
    leading = {"now": False}

    async def controllers(state: ClusterState, store: Store) -> None:
        leading["now"] = True
        started.set()
        await asyncio.Event().wait()

    cfg = settings(tmp_path)
    async with serving(cfg, run_controllers=controllers, is_leader=lambda: leading["now"]) as (
        line,
        _,
    ):
        conf = tmp_path / "data" / "admin.conf"
        assert line.startswith("podium server listening on https://127.0.0.1:")
        assert line.endswith(f"(store memory://, config {conf})")
        await asyncio.wait_for(started.wait(), 5)
        async with AsyncPodiumClient(ClientConfig.load(str(conf))) as client:
            health = await client.health()
    assert health["ok"] is True and health["leader"] is True
    assert health["store"]["backend"] == "memory" and health["store"]["revision"] > 1


async def test_insecure_serves_plain_http(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, insecure=True, controllers=False)) as (line, _):
        assert line.startswith("podium server listening on http://127.0.0.1:")
        config = ClientConfig.load(str(tmp_path / "data" / "admin.conf"))
        assert config.server.startswith("http://") and config.ca_pem is None
        async with AsyncPodiumClient(config) as client:
            assert (await client.health())["leader"] is False
    assert not (tmp_path / "data" / "ca.pem").exists()


async def test_cancel_stops_gracefully_and_ends_open_watches(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, controllers=False)) as (_, task):
        config = ClientConfig.load(str(tmp_path / "data" / "admin.conf"))
        async with AsyncPodiumClient(config) as client:
            stream = client._http.ndjson("/api/v1/events", {"watch": 1})
            first = await anext(stream)
            assert first["type"] == "BOOKMARK"
            task.cancel()
            rest = [line async for line in stream]  # the server ends the stream
            assert all(line["type"] == "BOOKMARK" for line in rest)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert task.done()
            with pytest.raises(ClientError, match="cannot reach podium server"):
                await client.health()


async def test_a_store_that_does_not_answer_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, "dead", lambda url: DeadStore())
    with pytest.raises(ServerError) as err:
        await serve(settings(tmp_path, store_url="dead://db:2379"), handle_signals=False)
    assert str(err.value) == (
        "store dead://db:2379 did not answer: connection refused; is it running? check --store"
    )


async def test_bad_store_url_and_listen_addresses(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"unknown store URL 'nope://x'.*check --store"):
        await serve(settings(tmp_path, store_url="nope://x"), handle_signals=False)
    with pytest.raises(ServerError, match=r"bad --listen '127\.0\.0\.1:99999'"):
        await serve(settings(tmp_path, listen="127.0.0.1:99999"), handle_signals=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"cannot listen on 127.0.0.1:{port}: .*--listen"):
            await serve(settings(tmp_path, listen=f"127.0.0.1:{port}"), handle_signals=False)


def test_parse_listen() -> None:
    assert parse_listen("[::1]:7443").url("https", 7443) == "https://[::1]:7443"
    assert parse_listen(":7443").url("https", 7443) == "https://127.0.0.1:7443"
    assert parse_listen("0.0.0.0:0").advertised == "127.0.0.1"
    assert parse_listen("10.0.0.5:7443").host == "10.0.0.5"
    for bad in ("7443", "host:port", "::1:7443"):
        with pytest.raises(ServerError, match="bad --listen"):
            parse_listen(bad)


async def test_crashing_controllers_stop_the_server_with_an_error(tmp_path: Path) -> None:
    async def broken(state: ClusterState, store: Store) -> None:
        raise RuntimeError("scheduler exploded")

    with pytest.raises(ServerError, match="server stopped: scheduler exploded"):
        await asyncio.wait_for(
            serve(settings(tmp_path), run_controllers=broken, handle_signals=False), 20
        )


async def test_leader_loop_leads_runs_controllers_and_resigns() -> None:
    store = MemoryStore()
    state = ClusterState(store)
    loop = LeaderLoop(host_ttl=3, leader_ttl=2, identity="test-server")
    task = asyncio.create_task(loop(state, store))
    try:
        async with asyncio.timeout(10):
            while not loop.leading:
                await asyncio.sleep(0.02)
        assert await store.get("/podium/leader") is not None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not loop.leading
    assert await store.get("/podium/leader") is None  # resigned
    await store.close()
