"""Site DR on the state layer: failover, drills that leave production untouched, failback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium.model import (
    GuestState,
    HostName,
    HostSpec,
    Kind,
    Manifest,
    Resources,
    parse_manifest_text,
)
from podium.state import (
    ClusterState,
    Conflict,
    DrMapModel,
    dr_failback,
    dr_failback_stop,
    dr_failback_sync,
    dr_failover,
    dr_test,
    dr_test_cleanup,
    dumps,
    keys,
    loads,
    parse_map,
)
from podium.store.memory import MemoryStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RPO = 300
CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _docs(path: Path) -> list[Manifest]:
    return parse_manifest_text(path.read_text(), source=str(path))


def site_a() -> list[Manifest]:
    """examples/profiles.yaml with Profile db protected and Guest db pinned to site A."""
    out = []
    for doc in _docs(EXAMPLES / "profiles.yaml"):
        extra: dict[str, Any] = {}
        if doc.kind is Kind.PROFILE:
            extra = {"protection": {"rpo_s": RPO}}
        elif doc.kind is Kind.GUEST:
            extra = {"site": "A"}
        out.append(Manifest(doc.kind, doc.name, {**doc.spec, **extra}))
    return out


MAP = parse_map(yaml.safe_load((EXAMPLES / "dr" / "map.yaml").read_text()))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def state(clock: Clock) -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store, clock=clock)
    await store.close()


async def join(state: ClusterState, name: str, site: str) -> int:
    lease = await state.store.grant(10)
    spec = HostSpec(capacity=CAPACITY, labels={"site": site})
    await state.register_host(HostName(name), spec, lease=lease.id, driver="sim", agent_version="t")
    return lease.id


async def run_on(state: ClusterState, guest: str, host: str) -> None:
    _, rev = await state.get_binding(guest)
    bound = await state.bind(guest, host, expected_revision=rev)
    assert bound is not None
    await state.report_guest_status(host, guest, bound.epoch, GuestState.RUNNING)


async def replica(
    state: ClusterState, guest: str, created: float, *, status: str = "completed", n: int = 0
) -> dict[str, Any]:
    """A replica record as the data path leaves it (written straight into the store)."""
    record = await state.get_record(Kind.GUEST, guest)
    assert record is not None
    backup_id = f"{guest}-r{n}-{int(created)}"
    backup = {
        "id": backup_id, "guest": guest, "uid": record["uid"], "host": "a1", "epoch": 1,
        "mode": "full", "state": status, "created": created, "finished": created + 5,
        "path": f"/b/replicas/{guest}/{backup_id}.qcow2", "target": "replica", "site": "A",
        "volumes": {f"{record['spec'].get('profile')}/data": f"/b/replicas/{guest}/data.qcow2",
                    f"{record['spec'].get('profile')}/logs": f"/b/replicas/{guest}/logs.qcow2"},
        "spec": record["spec"],
    }  # fmt: skip
    await state.store.put(keys.backup_key(guest, backup_id), dumps(backup))
    return backup


@pytest.fixture
async def lab(state: ClusterState, clock: Clock) -> dict[str, int]:
    """Two hosts per site, examples/profiles.yaml on A (db running on a1), site B's networks."""
    leases = {h: await join(state, h, h[0].upper()) for h in ("a1", "a2", "b1", "b2")}
    await state.apply(site_a() + _docs(EXAMPLES / "dr" / "site-b.yaml"))
    await run_on(state, "db", "a1")
    return leases


async def kill_site_a(state: ClusterState, leases: dict[str, int]) -> None:
    for host in ("a1", "a2"):
        await state.store.revoke(leases[host])


async def snapshot(state: ClusterState) -> dict[str, int]:
    res = await state.store.range(keys.ROOT)
    return {kv.key: kv.mod_revision for kv in res.kvs if not kv.key.startswith(keys.EVENTS)}


async def test_failover_rehomes_networks_keeps_identity_and_restores_from_the_replica(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    before = (await state.get_record(Kind.PROFILE, "db")) or {}
    old_guest = (await state.get_record(Kind.GUEST, "db")) or {}
    backup = await replica(state, "db", clock.now - 100)
    await kill_site_a(state, lab)
    clock.now += 20
    out = await dr_failover(state, "A", "B", MAP)
    assert (out["operation"], out["from"], out["to"], out["at"]) == (
        "failover",
        "A",
        "B",
        clock.now,
    )
    (line,) = out["guests"]
    assert line["recovered"] and line["backup"] == backup["id"]
    assert (line["point"], line["loss_s"], line["rpo_s"], line["within_rpo"]) == (
        backup["created"],
        120.0,
        RPO,
        True,
    )
    assert line["networks"] == {"front": "front-b", "back": "back-b"}
    assert line["ips"] == {"10.10.0.10": "10.30.0.10", "10.20.0.10": "10.40.0.10"}
    assert (out["recovered"], out["not_recovered"], out["max_loss_s"]) == (1, 0, 120.0)

    after = (await state.get_record(Kind.PROFILE, "db")) or {}
    nics = after["identity"]["nics"]
    assert [(n["network"], n["vlan"], n["ip"], n["gw"]) for n in nics] == [
        ("front-b", 300, "10.30.0.10/24", "10.30.0.1"),
        ("back-b", 400, "10.40.0.10/24", None),
    ]
    assert [n["mac"] for n in nics] == [n["mac"] for n in before["identity"]["nics"]]
    assert after["identity"]["hbas"] == before["identity"]["hbas"]  # WWPN, WWNN, LUNs, serials
    assert [n["network"] for n in after["spec"]["nics"]] == ["front-b", "back-b"]
    held = {kv.key for kv in (await state.store.range(keys.POOLS)).kvs}
    assert keys.pool_key("front-ips", "10.10.0.10") not in held  # released
    assert keys.pool_key("back-ips", "10.20.0.10") not in held
    assert {
        keys.pool_key("front-b-ips", "10.30.0.10"),
        keys.pool_key("back-b-ips", "10.40.0.10"),
    } <= held
    values = {kv.key: loads(kv.value) for kv in (await state.store.range(keys.POOLS)).kvs}
    mine = {k for k, v in values.items() if v["holder"] == "Profile/db"}
    assert {k for k in after["holds"] if k.startswith(keys.POOLS)} == mine

    guest = (await state.get_record(Kind.GUEST, "db")) or {}
    assert guest["uid"] != old_guest["uid"]
    assert guest["spec"]["site"] == "B" and guest["spec"]["profile"] == "db"
    assert guest["spec"]["restore_from"] == {
        "backup": backup["id"],
        "path": backup["path"],
        "volumes": backup["volumes"],
    }
    assert guest["nics"] == nics and guest["hbas"] == after["identity"]["hbas"]
    binding, _ = await state.get_binding("db")
    assert binding.host is None  # the scheduler places it on site B
    assert await state.store.get(keys.assign_key("a1", "db")) is None
    use = loads((await state.store.get(keys.profile_use_key("db"))).value)  # type: ignore[union-attr]
    assert use == {"guest": "db", "uid": guest["uid"]}
    events = [e["reason"] for e in (await state.list_events())[0]]
    assert "GuestRecovered" in events and events.count("DrFailover") == 2


async def test_the_ip_map_default_keeps_a_free_address_in_the_new_pool(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    # a stretched network: front-s draws from the same subnet as front, another pool
    await state.apply(
        parse_manifest_text(
            "kind: Pool\nname: front-s-ips\nspec: {type: ipv4, subnet: 10.10.0.0/24, "
            "range: 10.10.0.2-10.10.0.254, gateway: 10.10.0.1}\n---\n"
            "kind: Network\nname: front-s\nspec: {vlan: 150, ip_pool: front-s-ips}\n"
        )
    )
    await replica(state, "db", clock.now - 10)
    await kill_site_a(state, lab)
    dr_map = DrMapModel(networks={"front": "front-s"}, ips={"10.20.0.10": "10.20.0.77"})
    out = await dr_failover(state, "A", "B", dr_map)
    (line,) = out["guests"]
    assert line["networks"] == {"front": "front-s"}
    assert line["ips"] == {"10.20.0.10": "10.20.0.77"}  # kept 10.10.0.10; back re-addressed
    nics = ((await state.get_record(Kind.PROFILE, "db")) or {})["identity"]["nics"]
    assert [(n["network"], n["ip"]) for n in nics] == [
        ("front-s", "10.10.0.10/24"),
        ("back", "10.20.0.77/24"),
    ]
    held = {kv.key for kv in (await state.store.range(keys.POOLS)).kvs}
    assert keys.pool_key("front-s-ips", "10.10.0.10") in held
    assert keys.pool_key("front-ips", "10.10.0.10") not in held
    assert keys.pool_key("back-ips", "10.20.0.77") in held
    assert keys.pool_key("back-ips", "10.20.0.10") not in held


async def test_a_guest_without_a_replica_is_reported_not_recovered(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    await replica(state, "db", clock.now - 10, status="failed")
    await kill_site_a(state, lab)
    before = await snapshot(state)
    out = await dr_failover(state, "A", "B", MAP)
    (line,) = out["guests"]
    assert not line["recovered"] and "no completed replica" in line["reason"]
    assert (out["recovered"], out["not_recovered"], out["max_loss_s"]) == (0, 1, None)
    assert await snapshot(state) == before  # nothing was moved


async def test_failover_is_refused_while_a_host_of_the_failed_site_lives(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    await replica(state, "db", clock.now - 10)
    await state.store.revoke(lab["a1"])
    with pytest.raises(Conflict, match=r"site A still has live hosts \(a2\).*podium dr test"):
        await dr_failover(state, "A", "B", MAP)
    with pytest.raises(Conflict, match="from and to are both"):
        await dr_failover(state, "B", "B", MAP)
    with pytest.raises(Conflict, match="no host has the label site=C"):
        await dr_failover(state, "A", "C", MAP)
    bad = DrMapModel(networks={"front": "nowhere"})
    await state.store.revoke(lab["a2"])
    with pytest.raises(Conflict, match="'nowhere', which does not exist"):
        await dr_failover(state, "A", "B", bad)


async def test_failover_twice_recovers_nothing_twice(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    await replica(state, "db", clock.now - 30)
    await kill_site_a(state, lab)
    first = await dr_failover(state, "A", "B", MAP)
    assert first["recovered"] == 1
    before = await snapshot(state)
    clock.now += 60
    second = await dr_failover(state, "A", "B", MAP)
    assert (second["recovered"], second["already"], second["not_recovered"]) == (0, 1, 0)
    (line,) = second["guests"]
    assert line["recovered"] and line["already"] and line["reason"].startswith("already recovered")
    assert line["loss_s"] == 30.0  # the loss window of the run that recovered it
    assert await snapshot(state) == before


async def test_the_loss_window_is_measured_from_the_newest_replica_and_checked_against_the_rpo(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    await replica(state, "db", clock.now - 900, n=1)
    newest = await replica(state, "db", clock.now - 400, n=2)
    await replica(state, "db", clock.now - 5, status="running", n=3)  # in flight: not a point
    await kill_site_a(state, lab)
    out = await dr_failover(state, "A", "B", MAP)
    (line,) = out["guests"]
    assert line["backup"] == newest["id"]
    assert (line["loss_s"], line["within_rpo"], out["max_loss_s"]) == (400.0, False, 400.0)


async def test_dr_test_leaves_production_untouched_and_cleanup_removes_only_the_drill(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    backup = await replica(state, "db", clock.now - 50)
    before = await snapshot(state)
    with pytest.raises(Conflict, match="needs test_networks"):
        await dr_test(state, "A", "B", DrMapModel(networks={"front": "front-b"}))
    out = await dr_test(state, "A", "B", MAP)  # site A is up: a drill may run
    (line,) = out["guests"]
    assert line["recovered"] and line["copy"] == "db-drtest" and line["loss_s"] == 50.0
    assert line["networks"] == {"front": "front-drill", "back": "back-drill"}
    after = await snapshot(state)
    for key, mod in before.items():
        assert after.get(key) == mod, f"production key {key} was written or deleted"
    new = set(after) - set(before)
    prod = (await state.get_record(Kind.PROFILE, "db")) or {}
    copy = (await state.get_record(Kind.PROFILE, "db-drtest")) or {}
    assert new == {
        keys.object_key(Kind.PROFILE, "db-drtest"),
        keys.object_key(Kind.GUEST, "db-drtest"),
        keys.profile_use_key("db-drtest"),
        keys.dr_test_key("A", "B"),
        *copy["holds"],
    }
    macs = {n["mac"] for n in prod["identity"]["nics"]}
    assert not macs & {n["mac"] for n in copy["identity"]["nics"]}  # fresh addresses
    assert [n["network"] for n in copy["identity"]["nics"]] == ["front-drill", "back-drill"]
    assert "protection" not in copy["spec"]
    drill_guest = (await state.get_record(Kind.GUEST, "db-drtest")) or {}
    assert drill_guest["spec"]["site"] == "B"
    assert drill_guest["spec"]["restore_from"]["volumes"] == {
        "db-drtest/data": backup["volumes"]["db/data"],
        "db-drtest/logs": backup["volumes"]["db/logs"],
    }
    again = await dr_test(state, "A", "B", MAP)
    assert (again["recovered"], again["already"]) == (0, 1)

    cleaned = await dr_test_cleanup(state, "A", "B")
    assert cleaned["deleted"] == ["Guest/db-drtest", "Profile/db-drtest"]
    assert cleaned["kept"] == []
    final = await snapshot(state)
    assert final == before  # production as it was; every drill key gone


async def test_a_test_network_production_uses_is_refused(
    state: ClusterState, lab: dict[str, int]
) -> None:
    bad = DrMapModel(test_networks={"front": "back", "back": "back-drill"})
    with pytest.raises(Conflict, match="production Profile 'db' uses"):
        await dr_test(state, "A", "B", bad)


async def test_failback_syncs_a_final_replica_then_recreates_on_the_original_site(
    state: ClusterState, clock: Clock, lab: dict[str, int]
) -> None:
    await replica(state, "db", clock.now - 60)
    await kill_site_a(state, lab)
    await dr_failover(state, "A", "B", MAP)
    for host in ("a1", "a2"):  # site A is back
        lab[host] = await join(state, host, "A")
    await run_on(state, "db", "b1")
    clock.now += 1000
    sync = await dr_failback_sync(state, "B", "A")
    (asked,) = sync["backups"]
    assert (asked["guest"], asked["state"]) == ("db", "pending")
    record = loads((await state.store.get(keys.backup_key("db", asked["backup"]))).value)  # type: ignore[union-attr]
    assert record["target"] == "replica" and record["host"] == "b1"
    again = await dr_failback_sync(state, "B", "A")  # the one in flight counts
    assert again["backups"] == sync["backups"]

    early = await dr_failback(state, "B", "A", MAP, [asked["backup"]])
    assert early["guests"][0]["reason"].endswith("is still pending: wait for it")
    volumes = {"db/data": "/a/r/d", "db/logs": "/a/r/l"}
    done = {**record, "state": "completed", "finished": clock.now + 3,
            "path": "/a/replicas/db/final.qcow2", "volumes": volumes}  # fmt: skip
    await state.store.put(keys.backup_key("db", record["id"]), dumps(done))
    clock.now += 5
    running = await dr_failback(state, "B", "A", MAP, [asked["backup"]])
    assert (
        "is running on host b1, not stopped: it would run on both sites"
        in (running["guests"][0]["reason"])
    )  # never on both sites at once
    stop = await dr_failback_stop(state, "B", "A", [asked["backup"]])
    assert stop["stopping"] == ["db"] and stop["skipped"] == []
    assignment = loads((await state.store.get(keys.assign_key("b1", "db"))).value)  # type: ignore[union-attr]
    assert assignment["spec"]["running"] is False and "dr_stop" in assignment
    binding, _ = await state.get_binding("db")
    await state.report_guest_status("b1", "db", binding.epoch, GuestState.STOPPED)
    clock.now += 5
    out = await dr_failback(state, "B", "A", MAP, [asked["backup"]])
    (line,) = out["guests"]
    assert line["recovered"] and line["backup"] == record["id"] and line["loss_s"] == 10.0
    assert line["networks"] == {"front-b": "front", "back-b": "back"}
    assert line["ips"] == {"10.30.0.10": "10.10.0.10", "10.40.0.10": "10.20.0.10"}
    guest = (await state.get_record(Kind.GUEST, "db")) or {}
    assert guest["spec"]["site"] == "A" and guest["spec"]["restore_from"]["path"].startswith("/a/")
    assert await state.store.get(keys.assign_key("b1", "db")) is None  # stopped on B
    nics = ((await state.get_record(Kind.PROFILE, "db")) or {})["identity"]["nics"]
    assert [(n["network"], n["vlan"], n["ip"]) for n in nics] == [
        ("front", 100, "10.10.0.10/24"),
        ("back", 200, "10.20.0.10/24"),
    ]


def test_map_validation_says_what_to_fix() -> None:
    assert parse_map(None) == DrMapModel()
    with pytest.raises(ValueError, match="a DR map is a mapping"):
        parse_map(["front"])
    with pytest.raises(ValueError, match=r"ips.*'10.0.0.300'.*no prefix length"):
        parse_map({"ips": {"10.0.0.300": "10.1.0.1"}})
    with pytest.raises(ValueError, match="changes the IP version"):
        parse_map({"ips": {"10.0.0.1": "fd00::1"}})
    with pytest.raises(ValueError, match="'Front_B!' is not a network name"):
        parse_map({"networks": {"front": "Front_B!"}})
    with pytest.raises(ValueError, match="DR map vlans: Extra inputs"):
        parse_map({"vlans": {}})
