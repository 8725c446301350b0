"""The drain controller: empties hosts whose spec says ``draining``, one key per host.

::

    host record / bindings / guest status / migrations / assignments ──> key = host name
        reconcile(host): draining and not drained?
            guests bound there ──> plan_drain (pure) ──> Migrations.request (reason drain)
                                                        stop_for_drain, then bind(None)
            none left          ──> mark_drained ──> HostDrained (once)

The migrations it requests are started (and paced) by the migration controller; the
guests it unbinds are placed again by the placement controller (the host is cordoned).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from podium.controller import _snapshot as snap
from podium.controller._errors import TemporaryError
from podium.controller._migration_plans import (
    Drained,
    DrainGuest,
    LookAgain,
    RequestMigration,
    StopForDrain,
    UnbindForDrain,
    plan_drain,
)
from podium.model import Kind
from podium.state import (
    Conflict,
    Migrations,
    NotFound,
    keys,
    loads,
    mark_drained,
    stop_for_drain,
)
from podium.store import Event

if TYPE_CHECKING:
    from podium.controller._controllers import Context

log = logging.getLogger("podium.controller")

JSON = dict[str, Any]


def _host_of(record: Any, field: str) -> str | None:
    value = record.get(field) if isinstance(record, dict) else None
    return str(value) if value else None


def _parsed(parse: Callable[[Event], Any], event: Event) -> Any:
    try:
        return parse(event)
    except ValueError:
        return None


class DrainController:
    """Moves every guest off a draining host; says ``HostDrained`` once it is empty."""

    name = "drain"
    workers = 2
    debounce = 0.05

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.migrations = Migrations(ctx.state)
        self._hosts = keys.object_prefix(Kind.HOST)
        self._fields = (
            (keys.BINDINGS, "host"),
            (keys.GUEST_STATUS, "host"),
            (keys.MIGRATIONS, "source"),
        )
        self.prefixes: tuple[str, ...] = (self._hosts, keys.ASSIGN, *(p for p, _ in self._fields))

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith(self._hosts):
            return [key[len(self._hosts) :]]
        if key.startswith(keys.ASSIGN):
            host = key[len(keys.ASSIGN) :].partition("/")[0]
            return [host] if self._draining(host) else []
        for prefix, field in self._fields:
            if key.startswith(prefix):
                cache = self.ctx.cache  # (it parsed them already, for bindings and statuses)
                found = {_host_of(_parsed(cache.value_of, event), field)}
                found.add(_host_of(_parsed(cache.prev_value_of, event), field))
                return [h for h in found if h and self._draining(h)]
        return []

    def _draining(self, name: str) -> bool:
        """Only a draining host's guests matter (the cache already holds this event's
        host records; a host starting to drain is woken by its own record's event)."""
        spec = self.ctx.cache.host_spec(name)  # (no HostRecord: it runs on every binding)
        return spec is None or (bool(spec.get("draining")) and not spec.get("drained"))

    async def all_keys(self) -> Iterable[str]:
        return self.ctx.cache.host_names()

    async def reconcile(self, key: str) -> None:
        ctx = self.ctx
        state = ctx.state
        if ctx.cache.loaded and not self._draining(key):
            return  # (a host starting to drain wakes this key again with its record)
        host = await snap.read_host(state, key)
        if host is None or not host.spec.get("draining") or host.spec.get("drained"):
            return
        bindings = await state.store.range(keys.BINDINGS)
        guests: list[DrainGuest] = []
        for kv in bindings.kvs:
            binding = loads(kv.value)
            if binding.get("host") != key:
                continue
            name = kv.key[len(keys.BINDINGS) :]
            status = await state.store.get(keys.guest_status_key(name))
            assignment = await state.store.get(keys.assign_key(key, name))
            guests.append(
                DrainGuest(
                    name=name,
                    binding=binding,
                    revision=kv.mod_revision,
                    status=loads(status.value) if status else None,
                    assignment=loads(assignment.value) if assignment else None,
                    migration=await self.migrations.get(name),
                )
            )
        retry: TemporaryError | None = None
        guard = [ctx.leadership.compare]
        for action in plan_drain(key, guests, ctx.clock(), ctx.migrations):
            if isinstance(action, RequestMigration):
                try:
                    await self.migrations.request(action.guest, None, reason="drain", auto=True)
                except (Conflict, NotFound) as err:
                    log.info("drain %s: cannot migrate %s yet: %s", key, action.guest, err)
                    retry = TemporaryError(f"drain {key}: {err}", delay=2.0)
            elif isinstance(action, StopForDrain):
                if not await stop_for_drain(state, action.guest, key, ctx.clock(), guard):
                    retry = TemporaryError(f"drain {key}: {action.guest} changed", delay=0.1)
            elif isinstance(action, UnbindForDrain):
                bound = await state.bind(
                    action.guest, None, expected_revision=action.revision, extra=guard
                )
                if bound is None:
                    retry = TemporaryError(f"drain {key}: {action.guest} changed", delay=0.1)
                    continue
                ctx.events.record(
                    "Guest",
                    action.guest,
                    "GuestEvacuated",
                    f"not running: taken off draining host {key} to be placed elsewhere "
                    f"(epoch {bound.epoch})",
                    group=("Host", key),
                )
            elif isinstance(action, Drained):
                if await mark_drained(state, key, guard):
                    await state.emit("Host", key, "HostDrained", f"host {key} holds no guests")
            elif isinstance(action, LookAgain):
                retry = retry or TemporaryError(action.reason, delay=action.delay)
        if retry is not None:
            raise retry
