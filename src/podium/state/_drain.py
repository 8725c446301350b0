"""Host drain in the store: the host's spec carries it; guests leave by migration or rebind.

::

    POST /hosts/{name}/drain ──> start_drain: spec {cordoned: true, draining: true,
                                 drained: false} (one guarded write)
    drain controller, per guest bound there:
        running                 ──> a pending migration (reason "drain", target picked later)
        stopped / failed        ──> stop_for_drain: its assignment gets spec.running false
        (or not reported yet)       (the agent stops it and never restarts it), then, once
                                    the agent reports it stopped (or never reported it
                                    within the grace), unbind: placement puts it elsewhere
    nothing bound there any more ──> mark_drained (spec.drained: HostDrained once)
    POST /hosts/{name}/uncordon ──> the drain ends (set_cordoned clears both flags)

A guest is never rebound off a live host while its agent may still run it: the stop is
asked for first, and the unbind waits for the agent's word (DESIGN.md invariant 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from podium.model import Kind
from podium.state import _cluster, keys
from podium.store import Compare, Put

JSON = dict[str, Any]


async def start_drain(state: _cluster.ClusterState, host: str) -> int:
    """Cordon ``host`` and mark it draining; return how many guests are bound there.

    Idempotent (a host already draining keeps its drain). Raises
    :class:`~podium.state.NotFound` or :class:`~podium.state.Conflict` (lost a race).
    """
    key = keys.object_key(Kind.HOST, host)
    kv = await state.store.get(key)
    if kv is None:
        raise _cluster.NotFound(f"Host {host!r} not found")
    record = _cluster.loads(kv.value)
    spec = record["spec"]
    if not (spec.get("cordoned") and spec.get("draining")):
        record["spec"] = {**spec, "cordoned": True, "draining": True, "drained": False}
        result = await state.store.txn(
            [Compare(key, "mod", "=", kv.mod_revision)], [Put(key, _cluster.dumps(record))]
        )
        if not result.succeeded:
            raise _cluster.Conflict(f"Host {host!r} changed meanwhile; try the drain again")
    res = await state.store.range(keys.BINDINGS)
    return sum(1 for b in res.kvs if _cluster.loads(b.value).get("host") == host)


async def mark_drained(state: _cluster.ClusterState, host: str, guard: Sequence[Compare]) -> bool:
    """Record that a draining host holds no guest any more; False if that was done already
    (or the drain ended, or a guard failed)."""
    key = keys.object_key(Kind.HOST, host)
    kv = await state.store.get(key)
    if kv is None:
        return False
    record = _cluster.loads(kv.value)
    if not record["spec"].get("draining") or record["spec"].get("drained"):
        return False
    record["spec"] = {**record["spec"], "drained": True}
    result = await state.store.txn(
        [Compare(key, "mod", "=", kv.mod_revision), *guard], [Put(key, _cluster.dumps(record))]
    )
    return result.succeeded


async def stop_for_drain(
    state: _cluster.ClusterState,
    guest: str,
    host: str,
    now: float,
    guard: Sequence[Compare],
    *,
    stamp: str = "drain_stop",
) -> bool:
    """Ask ``host``'s agent to stop ``guest`` for good at its epoch (``spec.running`` false
    in its assignment, stamped ``stamp``: who asked, when). False if the binding or
    assignment changed."""
    bkv = await state.store.get(keys.binding_key(guest))
    akv = await state.store.get(keys.assign_key(host, guest))
    if bkv is None or akv is None or _cluster.loads(bkv.value).get("host") != host:
        return False
    assignment = _cluster.loads(akv.value)
    if stamp in assignment:
        return True
    stopped = {**assignment, "spec": {**assignment.get("spec", {}), "running": False}, stamp: now}
    result = await state.store.txn(
        [
            Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision),
            Compare(keys.assign_key(host, guest), "mod", "=", akv.mod_revision),
            *guard,
        ],
        [Put(keys.assign_key(host, guest), _cluster.dumps(stopped))],
    )
    return result.succeeded
