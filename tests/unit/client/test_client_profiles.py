"""Profiles through the CLI's client: apply the example, read identities, clone, restore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from podium.cli._app import app as cli
from podium.cli._profiles import render_profile
from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.model import Kind, Manifest, parse_manifest_text
from podium.state import ClusterState, Conflict, dumps, keys, restore_backup
from tests.support.server import StreamingASGITransport

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "profiles.yaml"


@pytest.fixture
async def client(app: FastAPI, config: ClientConfig) -> AsyncIterator[AsyncPodiumClient]:
    async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as c:
        yield c


async def _apply_example(client: AsyncPodiumClient) -> None:
    docs = [{"kind": m.kind.value, "name": m.name, "spec": m.spec} for m in _example()]
    await client.apply(docs, source="examples/profiles.yaml")


def _example() -> list[Manifest]:
    return parse_manifest_text(EXAMPLE.read_text(), source=str(EXAMPLE))


def _identities(items: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    macs, ips, wwns = [], [], []
    for p in items:
        ident = p["status"]["identity"]
        macs += [n["mac"] for n in ident["nics"]]
        ips += [f"{n['network']}/{n['ip']}" for n in ident["nics"]]
        for hba in ident["hbas"]:
            wwns += [hba["wwpn"], hba["wwnn"], *(lun["wwn"] for lun in hba["luns"])]
    return macs, ips, wwns


async def test_the_example_realises_macs_and_wwpns_that_get_profiles_shows(
    client: AsyncPodiumClient,
) -> None:
    await _apply_example(client)
    (db,), _ = await client.list("profiles")
    ident = db["status"]["identity"]
    assert [n["network"] for n in ident["nics"]] == ["front", "back"]
    assert [n["vlan"] for n in ident["nics"]] == [100, 200]
    assert all(n["mac"].startswith("02:00:0a:00:") for n in ident["nics"])
    assert ident["nics"][0]["ip"].startswith("10.10.0.") and ident["nics"][0]["gw"] == "10.10.0.1"
    (hba,) = ident["hbas"]
    assert hba["wwpn"].startswith("50:01:43:80:") and len(hba["luns"]) == 2
    assert db["status"]["guest"] == "db"
    guest = await client.get("guest", "db")
    assert [n["mac"] for n in guest["status"]["nics"]] == [n["mac"] for n in ident["nics"]]


async def test_clone_makes_pairs_with_fresh_addresses_and_a_spread_group(
    client: AsyncPodiumClient, state: ClusterState
) -> None:
    await _apply_example(client)
    answer = await client.clone_profile("db", 3, "host")
    assert answer["profiles"] == ["db-1", "db-2", "db-3"]
    assert answer["guests"] == ["db-1", "db-2", "db-3"]
    again = await client.clone_profile("db", 2)  # numbering goes on; nothing collides
    assert again["profiles"] == ["db-4", "db-5"]
    items, _ = await client.list("profiles")
    assert len(items) == 6
    macs, ips, wwns = _identities(items)
    assert len(set(macs)) == len(macs) == 12
    assert len(set(ips)) == len(ips) == 12
    assert len(set(wwns)) == len(wwns) == 6 * 4
    for name in answer["guests"]:
        record = await state.get_record(Kind.GUEST, name)
        assert record is not None
        assert record["spec"]["profile"] == name
        assert record["spec"]["app"] == "db" and record["spec"]["spread"] == "host"
    pools = {p["name"]: p["status"] for p in (await client.list("pools"))[0]}
    assert pools["macs"]["used"] == 12 and pools["wwns"]["used"] == 24


async def test_clone_refuses_what_it_cannot_copy_and_a_missing_source(
    client: AsyncPodiumClient,
) -> None:
    await _apply_example(client)
    fixed = {"nics": [{"network": "front", "mac": "02:00:0a:00:ff:00"}]}
    await client.apply([{"kind": "Profile", "name": "imported", "spec": fixed}])
    with pytest.raises(ClientError, match=r"fixed MAC and no mac_pool.*give the NIC a mac_pool"):
        await client.clone_profile("imported", 1)
    with pytest.raises(ClientError, match="Profile 'nope' not found"):
        await client.clone_profile("nope", 1)
    with pytest.raises(ClientError, match="count"):
        await client.clone_profile("db", 0)


async def test_a_restored_profile_guest_wears_its_profile_again(
    client: AsyncPodiumClient, state: ClusterState
) -> None:
    await _apply_example(client)
    record = await state.get_record(Kind.GUEST, "db")
    assert record is not None
    backup_id = "db-20261205-00ab"
    backup = {"id": backup_id, "guest": "db", "state": "completed", "path": "/b/db.qcow2",
              "spec": record["spec"], "uid": record["uid"]}  # fmt: skip
    await state.store.put(keys.backup_key("db", backup_id), dumps(backup))
    with pytest.raises(Conflict, match="Profile 'db' is used by Guest 'db'"):
        await restore_backup(state, backup_id, "db-copy")  # the original still wears it
    await state.delete_object(Kind.GUEST, "db")
    assert await restore_backup(state, backup_id) == "db"
    restored = await state.get_record(Kind.GUEST, "db")
    assert restored is not None and restored["spec"]["restore_from"]["backup"] == backup_id
    assert "nics" not in restored["spec"]
    assert restored["nics"] == record["nics"] and restored["hbas"] == record["hbas"]


def test_profile_show_renders_the_identity_and_where_it_lives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = {
        "name": "db",
        "status": {
            "guest": "db",
            "host": "h2",
            "guest_state": "running",
            "identity": {
                "nics": [{"network": "front", "vlan": 100, "mac": "02:00:0a:00:00:01",
                          "ip": "10.10.0.10/24", "gw": "10.10.0.1"}],
                "hbas": [{"wwpn": "50:01:43:80:00:00:00:00", "wwnn": "50:01:43:80:00:00:00:01",
                          "luns": [{"lun": 0, "volume": "db/data", "wwn": "50:01:43:80:00:00:00:02",
                                    "serial": "pd-db-data", "size_gib": 1}]}],
                "boot": ["disk", "network"],
            },
        },
    }  # fmt: skip
    render_profile(view)
    out = capsys.readouterr().out
    for fragment in ("worn by guest db, running on host h2", "02:00:0a:00:00:01", "100",
                     "WWPN 50:01:43:80:00:00:00:00", "db/data", "boot: disk, network"):  # fmt: skip
        assert fragment in out, out


def test_profile_commands_are_in_the_cli() -> None:
    result = CliRunner().invoke(cli, ["profile", "--help"])
    assert result.exit_code == 0
    assert "show" in result.output and "clone" in result.output
