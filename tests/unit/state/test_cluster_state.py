"""ClusterState over the in-memory store: apply, views, bindings, epochs, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import ClusterState, Conflict, GuardFailed, NotFound, StaleEpoch, keys
from podium.store import Compare
from podium.store.memory import MemoryStore

REQ = {"cpu": 1.0, "memory_mib": 128, "iops": 0, "net_mbps": 0}


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store, clock=lambda: 1000.0)
    await store.close()


def guest(name: str, **extra: object) -> Manifest:
    return Manifest(Kind.GUEST, name, {"image": "tiny", "request": REQ, "running": True, **extra})


async def test_apply_is_all_or_nothing_and_reports_actions(state: ClusterState) -> None:
    first = await state.apply([guest("a"), guest("b")])
    assert first.actions == (("Guest", "a", "created"), ("Guest", "b", "created"))
    again = await state.apply([guest("a"), guest("b", priority=5)])
    assert again.actions == (("Guest", "a", "unchanged"), ("Guest", "b", "configured"))
    items, _ = await state.list_objects(Kind.GUEST)
    assert [i["name"] for i in items] == ["a", "b"]
    assert items[0]["status"] == {
        "state": "pending",
        "host": None,
        "uuid": items[0]["metadata"]["uid"],
        "epoch": 0,
        "message": "waiting for placement",
        "since": 1000.0,
        "nics": items[0]["status"]["nics"],
    }
    assert [n["mac"][:8] for n in items[0]["status"]["nics"]] == ["52:54:00"]


async def test_owned_guest_cannot_be_applied_or_deleted(state: ClusterState) -> None:
    assert (
        await state.create_owned_guests("web", [("web-1", {"image": "tiny", "request": REQ})]) == 1
    )
    with pytest.raises(Conflict, match="owned by App 'web'"):
        await state.apply([guest("web-1")])
    with pytest.raises(Conflict, match="owned by App 'web'"):
        await state.delete_object(Kind.GUEST, "web-1")
    await state.delete_object(Kind.GUEST, "web-1", force_owned=True)
    with pytest.raises(NotFound):
        await state.get_object(Kind.GUEST, "web-1")


async def test_binding_epochs_grow_and_move_assignments(state: ClusterState) -> None:
    await state.apply([guest("g")])
    first = await state.bind("g", "h1", expected_revision=0)
    assert first is not None and first.epoch == 1
    assert await state.bind("g", "h2", expected_revision=0) is None  # stale guard
    _, rev = await state.get_binding("g")
    second = await state.bind("g", "h2", expected_revision=rev)
    assert second is not None and second.epoch == 2
    assert (await state.assignments("h1"))[0] == []
    [assignment], _ = await state.assignments("h2")
    assert (assignment.guest, assignment.epoch) == ("g", 2)


async def test_extra_compare_guards_binding(state: ClusterState) -> None:
    await state.apply([guest("g")])
    await state.store.put(keys.LEADER, b"me")
    stale = Compare(keys.LEADER, "mod", "=", 1)  # not the leader key's revision
    assert await state.bind("g", "h1", expected_revision=0, extra=[stale]) is None


async def test_status_only_from_current_epoch_holder(state: ClusterState) -> None:
    await state.apply([guest("g")])
    await state.bind("g", "h1", expected_revision=0)
    await state.report_guest_status("h1", "g", 1, GuestState.RUNNING)
    view = await state.get_object(Kind.GUEST, "g")
    assert (view["status"]["state"], view["status"]["host"]) == ("running", "h1")
    _, rev = await state.get_binding("g")
    await state.bind("g", "h2", expected_revision=rev)
    with pytest.raises(StaleEpoch):
        await state.report_guest_status("h1", "g", 1, GuestState.RUNNING)
    view = await state.get_object(Kind.GUEST, "g")
    # the old report is for epoch 1: the view must not call the guest running on h2
    assert (view["status"]["state"], view["status"]["host"]) == ("pending", "h2")


async def test_host_registration_and_view(state: ClusterState) -> None:
    lease = await state.store.grant(10)
    spec = HostSpec(Resources(8, 4096, 1000, 1000), {"rack": "r1"})
    await state.register_host(HostName("h1"), spec, lease=lease.id, driver="sim", agent_version="0")
    await state.set_cordoned("h1", True)
    await state.register_host(HostName("h1"), spec, lease=lease.id, driver="sim", agent_version="0")
    view = await state.get_object(Kind.HOST, "h1")
    assert view["status"]["state"] == "ready"
    assert view["status"]["cordoned"] is True  # re-registration keeps the operator's cordon
    await state.store.revoke(lease.id)
    view = await state.get_object(Kind.HOST, "h1")
    assert view["status"]["state"] == "suspect"


async def test_tokens_hashed_and_scoped(state: ClusterState) -> None:
    token = await state.create_token("agent", host="h1")
    record = await state.lookup_token(token)
    assert record is not None and record["role"] == "agent" and record["host"] == "h1"
    raw = await state.store.range(keys.TOKENS)
    assert all(token.encode() not in kv.value and token not in kv.key for kv in raw.kvs)
    assert await state.lookup_token(token + "x") is None
    expired = await state.create_token("join", ttl=-1)
    assert await state.lookup_token(expired) is None
    with pytest.raises(ValueError, match="unknown token role"):
        await state.create_token("root")


async def test_a_deposed_leaders_replica_and_waiting_writes_are_rejected(
    state: ClusterState,
) -> None:
    """create_owned_guests, delete_object and note_unplaced carry the leadership guard."""
    store = state.store
    term = await store.put(keys.LEADER, b'{"identity": "old"}')
    guard = [Compare(keys.LEADER, "mod", "=", term)]
    spec = {"image": "tiny", "request": REQ, "running": True}
    assert await state.create_owned_guests("web", [("web-1", spec)], guard=guard) == 1
    assert await state.note_unplaced("web-1", "0/0 hosts fit", guard=guard)

    await store.put(keys.LEADER, b'{"identity": "new"}')  # another server leads now
    with pytest.raises(GuardFailed, match="deposed leader"):
        await state.create_owned_guests("web", [("web-2", spec)], guard=guard)
    assert await state.get_record(Kind.GUEST, "web-2") is None
    with pytest.raises(GuardFailed):
        await state.note_unplaced("web-1", "something else", guard=guard)
    view = await state.get_object(Kind.GUEST, "web-1")
    assert view["status"]["message"] == "0/0 hosts fit"
    with pytest.raises(GuardFailed):
        await state.delete_object(Kind.GUEST, "web-1", force_owned=True, guard=guard)
    assert await state.get_record(Kind.GUEST, "web-1") is not None
    # GuardFailed is a Conflict: callers that retry conflicts keep working
    assert issubclass(GuardFailed, Conflict)


async def test_registration_and_keepalive_record_renewals_on_the_lease(
    state: ClusterState,
) -> None:
    lease = (await state.store.grant(10)).id
    spec = HostSpec(Resources(4, 4096, 100, 100), {})
    await state.register_host(HostName("h1"), spec, lease=lease, driver="sim", agent_version="t")
    beat = await state.store.get(keys.host_beat_key("h1"))
    assert beat is not None and beat.lease == lease
    await state.record_keepalive("h1", lease)
    await state.store.revoke(lease)
    assert await state.store.get(keys.host_beat_key("h1")) is None  # gone with the lease
