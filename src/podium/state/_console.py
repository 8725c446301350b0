"""Serial console capture: the tail of a guest's console, as its host last pushed it.

::

    agent of the guest's host ──put_console(host, guest, text)──> /podium/console/<guest>
        (guarded by the binding's mod revision: only the bound host writes; last 16 KiB)
    API ──get_console(guest)──> {"guest", "host", "text", "updated"}
    guest deleted ──> the console key goes in the same txn (ClusterState.delete_object)
"""

from __future__ import annotations

from typing import Any

from podium.model import Kind
from podium.state import _cluster, keys
from podium.store import Compare, Put

JSON = dict[str, Any]

CONSOLE_LIMIT = 16 * 1024  # bytes of UTF-8 kept (the tail)


def tail(text: str, limit: int = CONSOLE_LIMIT) -> str:
    """The last ``limit`` bytes of ``text`` (UTF-8), cut on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[-limit:].decode(errors="ignore")


async def put_console(state: _cluster.ClusterState, host: str, guest: str, text: str) -> int:
    """Store ``guest``'s console tail as pushed by ``host``; return the bytes kept.

    Raises :class:`~podium.state.StaleEpoch` unless ``host`` holds the guest's binding
    (a moved-away or fenced host cannot overwrite it), ``NotFound`` for an unknown guest.
    """
    for _ in range(_cluster.MAX_TXN_RETRIES):
        kv = await state.store.get(keys.binding_key(guest))
        binding = _cluster.loads(kv.value) if kv else None
        if binding is None and await state.get_record(Kind.GUEST, guest) is None:
            raise _cluster.NotFound(f"Guest {guest!r} not found")
        bound = binding.get("host") if binding else None
        if bound != host or kv is None:
            raise _cluster.StaleEpoch(
                f"guest {guest!r} is bound to {bound or 'no host'}, not {host}: "
                "only its host may push its console"
            )
        kept = tail(text)
        value = {"host": host, "text": kept, "updated": state._clock()}
        result = await state.store.txn(
            [Compare(keys.binding_key(guest), "mod", "=", kv.mod_revision)],
            [Put(keys.console_key(guest), _cluster.dumps(value))],
        )
        if result.succeeded:
            return len(kept.encode())
    raise _cluster.Conflict(f"console of {guest}: too much contention; push again")


async def get_console(state: _cluster.ClusterState, guest: str) -> JSON:
    """``{"guest", "host", "text", "updated"}``. Raises ``NotFound`` (unknown guest, or
    nothing captured yet)."""
    kv = await state.store.get(keys.console_key(guest))
    if kv is None:
        if await state.get_record(Kind.GUEST, guest) is None:
            raise _cluster.NotFound(f"Guest {guest!r} not found")
        raise _cluster.NotFound(f"no console captured for guest {guest!r} yet")
    value = _cluster.loads(kv.value)
    return {"guest": guest, "host": value.get("host"), "text": value.get("text", ""),
            "updated": value.get("updated")}  # fmt: skip
