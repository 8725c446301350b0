"""Random interleavings of migration steps and failover binds keep one runner and fresh epochs.

Every step an actor could take (request+start, target ready, progress, completed, failures
from either side or the controller, failover binds with fresh or stale revisions, status
reports) is drawn at random; after each one the store must show at most one assignment
of the guest that is not ``incoming``, epochs that never go back, and an epoch never
handed to two different hosts (a failed migration's target epoch is burnt).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import ClusterState, Conflict, Migrations, StaleEpoch, keys, loads, next_epoch
from podium.store.memory import MemoryStore

HOSTS = ("h1", "h2", "h3")
REQ = {"cpu": 1.0, "memory_mib": 128, "iops": 0, "net_mbps": 0}
CAP = Resources(cpu=4, memory_mib=1024, iops=1000, net_mbps=1000)

host_or_none = st.sampled_from((*HOSTS, None))
migrate = st.tuples(st.just("migrate"), st.sampled_from(HOSTS))
ready = st.tuples(st.just("ready"), st.just(None))
complete = st.tuples(st.just("complete"), st.just(None))
running = st.tuples(st.just("running"), st.just(None))
steps = st.one_of(
    migrate,
    migrate,
    ready,
    ready,
    complete,
    complete,
    running,
    st.tuples(st.just("progress"), st.just(None)),
    st.tuples(st.just("fail_source"), st.just(None)),
    st.tuples(st.just("fail_target"), st.just(None)),
    st.tuples(st.just("fail_controller"), st.just(None)),
    st.tuples(st.just("bind"), host_or_none),
    st.tuples(st.just("stale_bind"), host_or_none),
    st.tuples(st.just("running"), st.just(None)),
    st.tuples(st.just("target_status"), st.just(None)),
)


class Checker:
    """Invariants over what the store shows after every step."""

    def __init__(self) -> None:
        self.epoch_host: dict[int, str] = {}
        self.last_epoch = 0
        self.revisions: list[int] = []

    async def check(self, store: MemoryStore) -> None:
        binding_kv = await store.get(keys.binding_key("g"))
        binding = loads(binding_kv.value) if binding_kv else {}
        epoch = int(binding.get("epoch", 0))
        assert epoch >= self.last_epoch, (epoch, self.last_epoch)
        self.last_epoch = epoch
        if binding_kv is not None:
            self.revisions.append(binding_kv.mod_revision)
        res = await store.range(keys.ASSIGN)
        running: list[tuple[str, int]] = []
        for kv in res.kvs:
            host, _, guest = kv.key[len(keys.ASSIGN) :].partition("/")
            if guest != "g":
                continue
            a = loads(kv.value)
            e = int(a["epoch"])
            # an epoch, once handed to a host (incoming or not), is never another host's
            assert self.epoch_host.setdefault(e, host) == host, (e, host, self.epoch_host)
            if "incoming" in a:
                migration = binding.get("migration") or {}
                assert migration.get("to") == host and migration.get("epoch") == e, (a, binding)
                assert e > epoch
                continue
            running.append((host, e))
            assert host == binding.get("host") and e == epoch, (a, binding)
        assert len(running) <= 1, running
        assert next_epoch(binding or None) > max([epoch, *(e for _, e in running)])


async def run(plan: list[tuple[str, Any]], *, record_events: bool = True) -> str:
    store = MemoryStore()
    try:
        state = ClusterState(store, clock=lambda: 1000.0)
        for host in HOSTS:
            lease = await store.grant(600)
            await state.register_host(
                HostName(host), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
            )
        spec = {"image": "tiny", "request": REQ, "running": True}
        await state.apply([Manifest(Kind.GUEST, "g", spec)])
        await state.bind("g", "h1", expected_revision=0)
        await state.report_guest_status("h1", "g", 1, GuestState.RUNNING)
        m = Migrations(state)
        checker = Checker()
        stale_rev = 0
        await checker.check(store)
        for step, arg in plan:
            record = await m.get("g") or {}
            mid = record.get("id", "none")
            source, target = record.get("source"), record.get("target")
            binding, rev = await state.get_binding("g")
            if step == "migrate":
                try:
                    new = await m.request("g", arg)
                except Conflict:
                    continue
                await m.start("g", new["id"], arg)
            elif step == "ready" and target:
                await m.report(target, _r(mid, "target", "ready", uri="tcp:t:1"))
            elif step == "progress" and source:
                await m.report(source, _r(mid, "source", "progress", progress={"x": 1}))
            elif step == "complete" and source:
                await m.report(source, _r(mid, "source", "completed", result={}))
            elif step == "fail_source" and source:
                await m.report(source, _r(mid, "source", "failed", message="x"))
            elif step == "fail_target" and target:
                await m.report(target, _r(mid, "target", "failed", message="x"))
            elif step == "fail_controller" and record:
                await m.fail("g", mid, "timeout")
            elif step == "bind":
                stale_rev = rev
                bound = await state.bind("g", arg, expected_revision=rev)
                if bound is not None and bound.host:  # its new host starts it at once
                    await state.report_guest_status(
                        bound.host, "g", bound.epoch, GuestState.RUNNING
                    )
            elif step == "stale_bind" and stale_rev:
                await state.bind("g", arg, expected_revision=stale_rev)
            elif step == "running" and binding.host:
                await state.report_guest_status(
                    binding.host, "g", binding.epoch, GuestState.RUNNING
                )
            elif step == "target_status" and target:
                try:
                    await state.report_guest_status(
                        target, "g", int(record.get("target_epoch") or 0), GuestState.RUNNING
                    )
                except StaleEpoch:
                    pass
                else:  # only once the binding names the target
                    assert (await state.get_binding("g"))[0].host == target
            await checker.check(store)
        assert checker.revisions == sorted(checker.revisions)
        final = str((await m.get("g") or {}).get("state", "none"))
        if record_events:
            event(f"last migration {final}")
        return final
    finally:
        await store.close()


def _r(mid: str, role: str, step: str, **extra: Any) -> dict[str, Any]:
    return {"guest": "g", "id": mid, "role": role, "state": step, **extra}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=8, max_size=40))
def test_random_interleavings_keep_one_runner_and_fresh_epochs(
    plan: list[tuple[str, Any]],
) -> None:
    asyncio.run(run(plan))


def test_the_plain_path_completes() -> None:
    plan = [("migrate", "h2"), ("ready", None), ("progress", None), ("complete", None)]
    assert asyncio.run(run(plan, record_events=False)) == "completed"
