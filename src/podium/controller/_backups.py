"""The backup sweeper: fails backups that can no longer finish.

::

    /podium/backups/<guest>/*, /podium/bindings/<guest>, Guest <guest> ──> key <guest>
    reconcile(guest): in-flight backups ── stale_reason(backup, guest, binding) ──> failed
                      (guest deleted, or bound elsewhere / at another epoch; leader-guarded)

A backup is asked of one host at one epoch; once the binding moves on (failover,
migration, unbind) or the guest is gone, no report of it will ever be accepted, so the
record would stay ``pending``/``running`` forever without this loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from podium.controller._errors import TemporaryError
from podium.model import Kind
from podium.state import Conflict, fail_stale_backups, keys, list_backups, loads
from podium.store import Event, EventType

if TYPE_CHECKING:
    from podium.controller._controllers import Context

IN_FLIGHT = ("pending", "running")


class BackupSweeper:
    """Per guest: fail in-flight backups whose guest moved or was deleted (BackupFailed).

    Binding and guest changes only wake guests with a backup in flight (tracked from
    the backup records' own events and the periodic list), so a million placements
    cost no backup reads.
    """

    name = "backup"
    workers = 2
    debounce = 0.2

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._guests = keys.object_prefix(Kind.GUEST)
        self._in_flight: dict[str, set[str]] = {}  # guest -> backup keys in flight
        self.prefixes: tuple[str, ...] = (keys.BACKUPS, keys.BINDINGS, self._guests)

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith(keys.BACKUPS):
            guest = key[len(keys.BACKUPS) :].partition("/")[0]
            flying = self._in_flight.setdefault(guest, set())
            if event.type is EventType.PUT and _state_of(event.kv.value) in IN_FLIGHT:
                flying.add(key)
            else:
                flying.discard(key)
            if not flying:
                del self._in_flight[guest]
            return [guest]
        for prefix in (keys.BINDINGS, self._guests):
            if key.startswith(prefix):
                guest = key[len(prefix) :]
                return [guest] if guest in self._in_flight else []
        return []

    async def all_keys(self) -> Iterable[str]:
        items, _ = await list_backups(self.ctx.state)
        flying: dict[str, set[str]] = {}
        for b in items:
            if b.get("state") in IN_FLIGHT:
                flying.setdefault(b["guest"], set()).add(keys.backup_key(b["guest"], b["id"]))
        self._in_flight = flying
        return sorted(flying)

    async def reconcile(self, key: str) -> None:
        try:
            await fail_stale_backups(self.ctx.state, key, [self.ctx.leadership.compare])
        except Conflict as err:
            raise TemporaryError(str(err), delay=0.1) from err


def _state_of(raw: bytes) -> str | None:
    try:
        state = loads(raw).get("state")
    except (ValueError, AttributeError):
        return None
    return None if state is None else str(state)
