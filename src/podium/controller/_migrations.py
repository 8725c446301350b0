"""The migration controller: one cluster-wide pass that starts, paces and fails migrations.

::

    /podium/migrations/*, bindings, host status/liveness/records ──> key "migrations"
        reconcile: read records, bindings, statuses, hosts (+ views when some are pending)
                   ──> plan_migrations (pure) ──> Migrations.start / fail / note
                       (leader-guarded; MigrationStarted / MigrationFailed events)

One key and one worker, like placement: every start is decided over one read of the
cluster, with the capacity it reserves consumed before the next start is decided.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from podium.controller import _snapshot as snap
from podium.controller._errors import TemporaryError
from podium.controller._migration_plans import (
    FailMigration,
    LookAgain,
    MigrationView,
    NoteMigration,
    StartMigration,
    plan_migrations,
)
from podium.model import Kind
from podium.scheduler import MigrationPlanner
from podium.state import ClusterState, Migrations, MigrationState, keys, loads
from podium.store import Event

JSON = dict[str, Any]
ACTIVE = frozenset({MigrationState.PENDING, MigrationState.PREPARING, MigrationState.TRANSFERRING})

if TYPE_CHECKING:
    from podium.controller._controllers import Context

log = logging.getLogger("podium.controller")

MIGRATION_KEY = "migrations"


class MigrationController:
    """Pending migrations start within the limits; stuck or orphaned ones fail."""

    name = "migration"
    workers = 1
    debounce = 0.05

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.migrations = Migrations(ctx.state)
        self._triggers = (
            keys.MIGRATIONS,
            keys.BINDINGS,
            keys.HOST_STATUS,
            keys.HOST_LIVE,
            keys.object_prefix(Kind.HOST),
        )
        self.prefixes: tuple[str, ...] = self._triggers

    def keys_for(self, event: Event) -> Iterable[str]:
        return [MIGRATION_KEY] if event.kv.key.startswith(self._triggers) else []

    async def all_keys(self) -> Iterable[str]:
        return [MIGRATION_KEY]

    async def reconcile(self, key: str) -> None:
        ctx = self.ctx
        state = ctx.state
        records, _ = await self.migrations.list_records()
        active = {r["guest"]: r for r in records if r.get("state") in ACTIVE}
        if not active:
            return
        bindings = await _map(state, keys.BINDINGS)
        statuses = await _map(state, keys.GUEST_STATUS)
        hosts = await snap.read_hosts(state)
        if any(r["state"] == MigrationState.PENDING for r in active.values()):
            host_views, _ = await state.list_objects(Kind.HOST)
            guest_views, _ = await state.list_objects(Kind.GUEST)
            planner = MigrationPlanner.from_views(host_views, guest_views)
            guests = frozenset(g["name"] for g in guest_views)
        else:
            planner = MigrationPlanner.from_views([], [])
            guests = frozenset(active)
        view = MigrationView(active, bindings, statuses, hosts, planner, guests)
        limits = ctx.migrations
        retry: TemporaryError | None = None
        for action in plan_migrations(view, ctx.scheduler, limits, ctx.clock()):
            guard = [ctx.leadership.compare]
            if isinstance(action, StartMigration):
                outcome = await self.migrations.start(
                    action.guest, action.id, action.target, guard=guard
                )
                if not outcome.accepted:
                    retry = TemporaryError(
                        f"migration {action.id} of {action.guest}: {outcome.reason}", delay=0.1
                    )
            elif isinstance(action, FailMigration):
                if not await self.migrations.fail(action.guest, action.id, action.why, guard=guard):
                    retry = TemporaryError(f"migration {action.id} changed meanwhile", delay=0.1)
            elif isinstance(action, NoteMigration):
                await self.migrations.note(action.guest, action.id, action.message)
            elif isinstance(action, LookAgain):
                retry = retry or TemporaryError(action.reason, delay=action.delay)
        if retry is not None:
            raise retry


async def _map(state: ClusterState, prefix: str) -> dict[str, JSON]:
    res = await state.store.range(prefix)
    return {kv.key[len(prefix) :]: loads(kv.value) for kv in res.kvs}
