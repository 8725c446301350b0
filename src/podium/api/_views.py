"""Reading one object's view cheaply (watch streams re-read a view per change).

:meth:`ClusterState.get_object` builds a view from whole-prefix reads, which is right
for one-off gets but costs O(cluster) per call. A watch stream re-reads the view of
every object that changes, so it uses these point reads instead; they build the
view with the same functions (:func:`podium.state.guest_view`, :func:`host_view`).
"""

from __future__ import annotations

from typing import Any

from podium.model import Kind, Resources
from podium.state import ClusterState, NotFound, guest_view, host_view, keys, loads

JSON = dict[str, Any]


async def _get(state: ClusterState, key: str) -> Any:
    kv = await state.store.get(key)
    return loads(kv.value) if kv else None


async def read_view(state: ClusterState, kind: Kind, name: str) -> JSON:
    """The API view of one object. Raises :class:`NotFound`."""
    if kind is Kind.GUEST:
        record = await _get(state, keys.object_key(kind, name))
        if record is None:
            raise NotFound(f"Guest {name!r} not found")
        binding = await _get(state, keys.binding_key(name))
        report = await _get(state, keys.guest_status_key(name))
        return guest_view(record, binding, report)
    if kind is Kind.HOST:
        record = await _get(state, keys.object_key(kind, name))
        if record is None:
            raise NotFound(f"Host {name!r} not found")
        status = await _get(state, keys.host_status_key(name))
        live = await state.store.get(keys.host_live_key(name)) is not None
        allocated, count = Resources(), 0
        assigned = await state.store.range(keys.assign_prefix(name))
        for kv in assigned.kvs:
            gname = loads(kv.value)["guest"]
            guest = await _get(state, keys.object_key(Kind.GUEST, gname))
            binding = await _get(state, keys.binding_key(gname))
            if guest is None or binding is None or binding.get("host") != name:
                continue
            allocated = allocated + Resources.from_dict(guest["spec"]["request"])
            count += 1
        return host_view(record, status, live, allocated, count)
    return await state.get_object(kind, name)
