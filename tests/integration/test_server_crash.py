"""Acceptance: kill -9 the server while a client applies guests one by one.

Every apply the server acknowledged must exist exactly once after a restart on the
same data dir, with its whole record; the one apply in flight at the kill may or
may not exist, but never half-written.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.model import validate_document
from tests.support.server import start_server, stop_server

GUESTS = 200


def guest(i: int) -> dict[str, Any]:
    return {
        "kind": "Guest",
        "name": f"g-{i:03d}",
        "spec": {
            "image": "tiny",
            "request": {"cpu": 1 + i % 4, "memory_mib": 128 + i, "iops": i, "net_mbps": 10},
            "priority": i % 7,
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [37, 151])
async def test_acknowledged_applies_survive_kill_9(tmp_path: Path, kill_after: int) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    acked: list[str] = []
    attempted: list[str] = []
    failure: list[ClientError] = []

    async def apply_one_by_one(config: ClientConfig) -> None:
        async with AsyncPodiumClient(config) as client:
            for i in range(GUESTS):
                doc = guest(i)
                attempted.append(doc["name"])
                try:
                    await client.apply([doc], source=f"{doc['name']}.yaml")
                except ClientError as err:
                    failure.append(err)
                    return
                acked.append(doc["name"])

    try:
        applier = asyncio.create_task(apply_one_by_one(ClientConfig.load(str(first.config_path))))
        async with asyncio.timeout(60):
            while len(acked) < kill_after and not applier.done():
                await asyncio.sleep(0.001)
        os.kill(first.proc.pid, signal.SIGKILL)  # mid-way, no goodbye
        await asyncio.wait_for(applier, 30)
    finally:
        assert stop_server(first, signal.SIGKILL) == -signal.SIGKILL
    assert kill_after <= len(acked) < GUESTS, "the kill must land mid-way"
    assert failure and failure[0].status is None  # the client saw the server vanish
    in_flight = attempted[-1]

    second = start_server(data)
    try:
        async with AsyncPodiumClient(ClientConfig.load(str(second.config_path))) as client:
            items, _ = await client.list("guests")
            names = [item["name"] for item in items]
            assert len(names) == len(set(names)), "a guest exists twice"
            assert set(acked) <= set(names), f"lost: {sorted(set(acked) - set(names))}"
            assert set(names) <= {*acked, in_flight}, "a guest nobody applied"
            for item in items:
                i = int(item["name"].split("-")[1])
                expected = validate_document(guest(i)).spec
                assert item["spec"] == expected, f"{item['name']} is half-written"
                assert item["metadata"]["uid"] and item["status"]["uuid"] == item["metadata"]["uid"]
            again = await client.apply([guest(0)], source="again.yaml")
            assert again["results"] == [{"kind": "Guest", "name": "g-000", "action": "unchanged"}]
    finally:
        stop_server(second)
