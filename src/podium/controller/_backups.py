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
from podium.state import Conflict, fail_stale_backups, keys, list_backups
from podium.store import Event

if TYPE_CHECKING:
    from podium.controller._controllers import Context

IN_FLIGHT = ("pending", "running")


class BackupSweeper:
    """Per guest: fail in-flight backups whose guest moved or was deleted (BackupFailed)."""

    name = "backup"
    workers = 2
    debounce = 0.2

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._guests = keys.object_prefix(Kind.GUEST)

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith(keys.BACKUPS):
            return [key[len(keys.BACKUPS) :].partition("/")[0]]
        for prefix in (keys.BINDINGS, self._guests):
            if key.startswith(prefix):
                return [key[len(prefix) :]]
        return []

    async def all_keys(self) -> Iterable[str]:
        items, _ = await list_backups(self.ctx.state)
        return sorted({b["guest"] for b in items if b.get("state") in IN_FLIGHT})

    async def reconcile(self, key: str) -> None:
        try:
            await fail_stale_backups(self.ctx.state, key, [self.ctx.leadership.compare])
        except Conflict as err:
            raise TemporaryError(str(err), delay=0.1) from err
