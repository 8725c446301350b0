"""serve() with a guest network: NICs get pool addresses, backups and console over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.server import ServerSettings, serve


@contextlib.asynccontextmanager
async def serving(cfg: ServerSettings) -> AsyncIterator[ClientConfig]:
    lines: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(serve(cfg, ready=lines.put_nowait, handle_signals=False))
    try:
        async with asyncio.timeout(20):
            await lines.get()
        yield ClientConfig.load(str(cfg.data_dir / "admin.conf"))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_guests_get_addresses_from_the_servers_guest_network(tmp_path: Path) -> None:
    cfg = ServerSettings(
        store_url=f"sqlite:///{tmp_path}/podium.db",
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        leader_ttl=2,
        heartbeat=0.2,
        shutdown_timeout=2,
        guest_subnet="10.77.0.0/24",
        guest_pool="10.77.0.100-10.77.0.110",
        guest_gateway="10.77.0.1",
    )
    async with serving(cfg) as config, AsyncPodiumClient(config) as client:
        guest = {"kind": "Guest", "name": "a", "spec": {"nics": [{}, {"ip": "10.77.0.100"}]}}
        await client.apply([guest])
        view = await client.get("guests", "a")
        assert [n["ip"] for n in view["status"]["nics"]] == ["10.77.0.101/24", "10.77.0.100/24"]
        assert {n["gw"] for n in view["status"]["nics"]} == {"10.77.0.1"}
        clash = {"kind": "Guest", "name": "b", "spec": {"nics": [{"ip": "10.77.0.101"}]}}
        try:
            await client.apply([clash])
        except ClientError as err:
            assert err.status == 409 and "held by guest 'a'" in str(err)
        else:
            raise AssertionError("a taken IP was applied")
        try:
            await client.create_backup("a")
        except ClientError as err:
            assert err.status == 409 and "not running" in str(err)
        else:
            raise AssertionError("a guest that is not running was backed up")
        assert await client.backups() == []
