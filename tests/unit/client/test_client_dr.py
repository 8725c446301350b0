"""Site DR through the API, the client and the CLI: routes, errors, map parsing, reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from typer.testing import CliRunner

from podium.cli import _dr
from podium.cli._app import app as cli
from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.model import (
    GuestState,
    HostName,
    HostSpec,
    Kind,
    Manifest,
    Resources,
    parse_manifest_text,
)
from podium.state import ClusterState, dumps, keys
from tests.support.server import StreamingASGITransport

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MAP = yaml.safe_load((EXAMPLES / "dr" / "map.yaml").read_text())


@pytest.fixture
async def client(app: FastAPI, config: ClientConfig) -> AsyncIterator[AsyncPodiumClient]:
    async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as c:
        yield c


async def two_sites(state: ClusterState) -> dict[str, int]:
    """Hosts a1, b1; examples/profiles.yaml (db protected, pinned to A) and site B's networks."""
    leases = {}
    for host, site in (("a1", "A"), ("b1", "B")):
        lease = await state.store.grant(10)
        spec = HostSpec(capacity=Resources(cpu=8, memory_mib=8192), labels={"site": site})
        await state.register_host(
            HostName(host), spec, lease=lease.id, driver="sim", agent_version="t"
        )
        leases[host] = lease.id
    docs = []
    for path in (EXAMPLES / "profiles.yaml", EXAMPLES / "dr" / "site-b.yaml"):
        for doc in parse_manifest_text(path.read_text()):
            extra: dict[str, Any] = {}
            if doc.kind is Kind.PROFILE:
                extra = {"protection": {"rpo_s": 300}}
            elif doc.kind is Kind.GUEST:
                extra = {"site": "A"}
            docs.append(Manifest(doc.kind, doc.name, {**doc.spec, **extra}))
    await state.apply(docs)
    bound = await state.bind("db", "a1", expected_revision=0)
    assert bound is not None
    await state.report_guest_status("a1", "db", bound.epoch, GuestState.RUNNING)
    guest = await state.get_record(Kind.GUEST, "db")
    assert guest is not None
    now = state.now()
    backup = {"id": "db-r1", "guest": "db", "uid": guest["uid"], "state": "completed",
              "created": now - 60, "finished": now - 55, "path": "/b/r/db.qcow2",
              "target": "replica", "volumes": {}, "spec": guest["spec"]}  # fmt: skip
    await state.store.put(keys.backup_key("db", "db-r1"), dumps(backup))
    return leases


async def test_failover_over_the_api_refuses_a_live_site_then_recovers(
    client: AsyncPodiumClient, state: ClusterState
) -> None:
    leases = await two_sites(state)
    with pytest.raises(ClientError, match="site A still has live hosts") as err:
        await client.dr_failover("A", "B", MAP)
    assert err.value.status == 409
    with pytest.raises(ClientError, match="no prefix length") as bad:
        await client.dr_failover("A", "B", {"ips": {"10.0.0.300": "10.1.0.1"}})
    assert bad.value.status == 422
    drill = await client.dr_test("A", "B", MAP)  # a live site may be drilled
    assert drill["recovered"] == 1 and drill["guests"][0]["copy"] == "db-drtest"
    cleaned = await client.dr_test_cleanup("A", "B")
    assert cleaned["deleted"] == ["Guest/db-drtest", "Profile/db-drtest"]
    await state.store.revoke(leases["a1"])
    report = await client.dr_failover("A", "B", MAP)
    assert report["recovered"] == 1 and report["guests"][0]["networks"]["front"] == "front-b"
    assert report["max_loss_s"] is not None and report["max_loss_s"] >= 60
    view = await client.get("profiles", "db")
    assert view["status"]["protection"]["rpo_s"] == 300
    assert view["status"]["protection"]["last_point"] is None  # a new guest: no replica yet


async def test_failback_steps_over_the_api(client: AsyncPodiumClient, state: ClusterState) -> None:
    await two_sites(state)
    sync = await client.dr_failback_sync("A", "B")
    (item,) = sync["backups"]
    assert item["guest"] == "db" and item["state"] == "pending"
    report = await client.dr_failback("A", "B", [item["backup"]], {})
    assert report["not_recovered"] == 1 and "still pending" in report["guests"][0]["reason"]


async def test_dr_routes_are_admin_only(
    app: FastAPI, config: ClientConfig, state: ClusterState
) -> None:
    token = await state.create_token("app", app="web")
    limited = ClientConfig(server="http://podium", ca_pem=None, token=token, path="/x")
    async with AsyncPodiumClient(limited, transport=StreamingASGITransport(app)) as c:
        with pytest.raises(ClientError) as err:
            await c.dr_test_cleanup("A", "B")
    assert err.value.status == 403


class FakeClient:
    """What the CLI calls, recorded; answers like the server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.polls = 0
        self.gets = 0

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _report(self, operation: str, recovered: bool = True) -> dict[str, Any]:
        line = {"guest": "db", "profile": "db", "recovered": recovered,
                "reason": "" if recovered else "no completed replica", "backup": "db-r1",
                "point": 1000.0, "loss_s": 42.0, "rpo_s": 300, "within_rpo": True,
                "networks": {"front": "front-b"}, "ips": {"10.10.0.10": "10.30.0.10"}}  # fmt: skip
        return {"operation": operation, "from": "A", "to": "B", "at": 1042.0,
                "guests": [line], "recovered": int(recovered), "not_recovered": int(not recovered),
                "already": 0, "max_loss_s": 42.0}  # fmt: skip

    async def dr_failover(self, f: str, t: str, dr_map: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("failover", (f, t, dr_map)))
        return self._report("failover")

    async def dr_test(self, f: str, t: str, dr_map: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("test", (f, t, dr_map)))
        return self._report("test", recovered=False)

    async def dr_test_cleanup(self, f: str, t: str) -> dict[str, Any]:
        self.calls.append(("cleanup", (f, t)))
        return {"deleted": ["Guest/db-drtest", "Profile/db-drtest"], "kept": []}

    async def dr_failback_sync(self, f: str, t: str) -> dict[str, Any]:
        self.calls.append(("sync", (f, t)))
        return {"backups": [{"guest": "db", "backup": "db-f1", "state": "pending"}], "skipped": []}

    async def dr_failback_stop(self, f: str, t: str, backups: list[str]) -> dict[str, Any]:
        self.calls.append(("stop", (f, t, backups)))
        return {"stopping": ["db"], "skipped": []}

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        self.gets += 1
        return {"name": name, "status": {"state": "stopped" if self.gets > 1 else "running"}}

    async def backup(self, backup_id: str) -> dict[str, Any]:
        self.polls += 1
        return {"id": backup_id, "state": "completed" if self.polls > 1 else "running"}

    async def dr_failback(
        self, f: str, t: str, ids: list[str], dr_map: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("failback", (f, t, ids, dr_map)))
        return self._report("failback")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(_dr, "client_for", lambda config: fake)
    monkeypatch.setattr(_dr, "POLL", 0.01)
    return fake


def test_cli_failover_parses_the_map_and_prints_the_report(fake: FakeClient) -> None:
    path = str(EXAMPLES / "dr" / "map.yaml")
    result = CliRunner().invoke(cli, ["dr", "failover", "--from", "A", "--to", "B", "--map", path])
    assert result.exit_code == 0, result.output
    (call,) = fake.calls
    assert call[0] == "failover" and call[1][:2] == ("A", "B")
    assert call[1][2]["networks"] == {"front": "front-b", "back": "back-b"}
    assert call[1][2]["ips"] == {"10.10.0.10": "10.30.0.10"}
    assert "recovered" in result.output and "42 s / 300 s" in result.output
    assert "front->front-b" in result.output
    assert "worst loss window 42 s" in result.output
    as_json = CliRunner().invoke(cli, ["dr", "failover", "--from", "A", "--to", "B", "--json"])
    assert json.loads(as_json.output)["max_loss_s"] == 42.0


def test_cli_test_needs_a_map_and_exits_2_when_a_guest_is_not_recovered(
    fake: FakeClient, tmp_path: Path
) -> None:
    missing = CliRunner().invoke(cli, ["dr", "test", "--from", "A", "--to", "B"])
    assert missing.exit_code == 1 and "needs --map" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("ips: {10.0.0.1: fd00::1}\n")
    refused = CliRunner().invoke(cli, ["dr", "test", "--from", "A", "--to", "B", "--map", str(bad)])
    assert refused.exit_code == 1 and "changes the IP version" in refused.output
    assert fake.calls == []  # refused before asking the server
    path = str(EXAMPLES / "dr" / "map.yaml")
    result = CliRunner().invoke(cli, ["dr", "test", "--from", "A", "--to", "B", "--map", path])
    assert result.exit_code == 2 and "not recovered" in result.output
    cleanup = CliRunner().invoke(cli, ["dr", "test", "--from", "A", "--to", "B", "--cleanup"])
    assert cleanup.exit_code == 0 and "deleted Guest/db-drtest" in cleanup.output


def test_cli_failback_syncs_waits_for_the_finals_then_fails_back(fake: FakeClient) -> None:
    result = CliRunner().invoke(cli, ["dr", "failback", "--from", "B", "--to", "A", "--json"])
    assert result.exit_code == 0, result.output
    assert [c[0] for c in fake.calls] == ["sync", "stop", "failback"]
    assert fake.calls[1][1] == ("B", "A", ["db-f1"])
    assert fake.calls[2][1] == ("B", "A", ["db-f1"], {})
    assert fake.polls == 2 and fake.gets == 2  # waited for the final replica, then the stop
    assert json.loads(result.output)["operation"] == "failback"
