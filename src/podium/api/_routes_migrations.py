"""Live migration and drain routes, and the agents' migration reports.

::

    POST /api/v1/guests/{name}/migrate {"to": HOST|null} ──> 202 {"migration": pending record}
         409: not running / already migrating / backup in flight
         422: bad target (unknown, not ready, cordoned, draining, same host, does not fit)
    GET  /api/v1/migrations, /api/v1/migrations/{guest}      the records (app: its guests)
    POST /api/v1/hosts/{name}/drain ──> cordon + draining (the drain controller empties it)
    POST /api/v1/agent/{host}/migrations ──> {"accepted", "reason"} (stale: accepted false)

The routes validate and check scope; the record's transitions live in
:class:`podium.state.Migrations`; the migration controller starts pending ones.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from podium.api._auth import HTTPError, app_may_see, require_admin, require_host, require_reader
from podium.api._context import Ctx, Who
from podium.api.schemas import ErrorBody
from podium.model import Kind
from podium.scheduler import MigrationPlanner, Scheduler, default_scheduler
from podium.state import Migrations, keys, loads, start_drain

JSON = dict[str, Any]

router = APIRouter(prefix="/api/v1", tags=["migrations"])

_scheduler: Scheduler = default_scheduler()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigrateRequest(_Body):
    """Where to move a running guest; ``null``: the scheduler picks the best other host."""

    to: str | None = Field(default=None, examples=["host-2"])


class MigrationAccepted(BaseModel):
    migration: JSON


class MigrationList(BaseModel):
    items: list[JSON]
    revision: int


class DrainResponse(BaseModel):
    name: str
    draining: bool
    guests: int = Field(description="guests bound to the host when the drain began")


class MigrationReport(_Body):
    """One step of a migration, from its source or its target agent."""

    guest: str
    id: str
    role: Literal["source", "target"]
    state: Literal["ready", "progress", "completed", "failed"]
    uri: str | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    message: str = ""


class ReportAnswer(BaseModel):
    accepted: bool
    reason: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "not running, already migrating, backup in flight"},
    422: {"model": ErrorBody, "description": "the target cannot take the guest (says why)"},
}


async def _guest_view(ctx: Ctx, who: Who, name: str, what: str) -> JSON:
    require_reader(who, what)
    view = await ctx.state.get_object(Kind.GUEST, name)
    if not app_may_see(who, view):
        raise HTTPError(403, f"an app token acts only on App {who.app!r} and its guests")
    return view


@router.post(
    "/guests/{name}/migrate",
    status_code=202,
    response_model=MigrationAccepted,
    responses=_ERRORS,
    summary="Live-migrate a running guest (to a host, or where the scheduler picks)",
)
async def migrate(name: str, body: MigrateRequest, ctx: Ctx, who: Who) -> MigrationAccepted:
    view = await _guest_view(ctx, who, name, "migrating a guest")
    status = view["status"]
    active = status.get("migration")
    if active:
        raise HTTPError(
            409,
            f"guest {name!r} is already migrating ({active['id']}, {active['state']}, to "
            f"{active.get('to') or 'a host to be picked'}): wait for it to finish",
        )
    if status["state"] != "running":
        raise HTTPError(
            409,
            f"guest {name!r} is {status['state']}, not running: only a running guest can be "
            "live-migrated",
        )
    hosts, _ = await ctx.state.list_objects(Kind.HOST)
    guests, _ = await ctx.state.list_objects(Kind.GUEST)
    planner = MigrationPlanner.from_views(hosts, guests)
    target = body.to
    if target is not None:
        problem = planner.problem(name, target)
        if problem is not None:
            raise HTTPError(422, f"cannot migrate guest {name!r} to {target}: {problem}")
    else:
        target, why = planner.choose(_scheduler, name)
        if target is None:
            raise HTTPError(422, f"cannot migrate guest {name!r}: no host can take it: {why}")
    record = await Migrations(ctx.state).request(
        name, target, reason="operator", auto=body.to is None
    )
    picked = "picked by the scheduler" if body.to is None else "asked for"
    await ctx.state.emit(
        "Guest",
        name,
        "MigrationRequested",
        f"live migration {record['id']} of {name}: {record['source']} -> {target} ({picked})",
    )
    return MigrationAccepted(migration=record)


@router.get(
    "/migrations",
    response_model=MigrationList,
    summary="Every guest's latest live migration (app token: its guests only)",
)
async def list_migrations(ctx: Ctx, who: Who) -> MigrationList:
    require_reader(who, "reading migrations")
    items, revision = await Migrations(ctx.state).list_records()
    if not who.is_admin:
        res = await ctx.state.store.range(keys.object_prefix(Kind.GUEST))
        owned = {
            r["name"] for r in (loads(kv.value) for kv in res.kvs) if r.get("owner") == who.app
        }
        items = [m for m in items if m.get("guest") in owned]
    return MigrationList(items=items, revision=revision)


@router.get(
    "/migrations/{guest}",
    responses={404: {"model": ErrorBody, "description": "no migration of that guest recorded"}},
    summary="A guest's latest live migration",
)
async def get_migration(guest: str, ctx: Ctx, who: Who) -> JSON:
    require_reader(who, "reading migrations")
    record = await Migrations(ctx.state).get(guest)
    if record is not None and not who.is_admin:
        owner = (await ctx.state.get_record(Kind.GUEST, guest) or {}).get("owner")
        if owner != who.app:
            raise HTTPError(403, f"an app token acts only on App {who.app!r} and its guests")
    if record is None:
        raise HTTPError(
            404,
            f"no migration of guest {guest!r} recorded: start one with "
            f"POST /api/v1/guests/{guest}/migrate",
        )
    return record


@router.post(
    "/hosts/{name}/drain",
    response_model=DrainResponse,
    summary="Cordon a host and move every guest off it (live migration where running)",
)
async def drain(name: str, ctx: Ctx, who: Who) -> DrainResponse:
    require_admin(who, "draining a host")
    count = await start_drain(ctx.state, name)
    await ctx.state.emit(
        "Host", name, "HostDraining", f"host {name} draining: moving its {count} guest(s) away"
    )
    return DrainResponse(name=name, draining=True, guests=count)


@router.post(
    "/agent/{host}/migrations",
    response_model=ReportAnswer,
    tags=["agent"],
    summary="Report a step of a live migration this host takes part in",
)
async def report_migration(host: str, body: MigrationReport, ctx: Ctx, who: Who) -> ReportAnswer:
    """``accepted`` false: stale (the migration is over, or not this host's): drop it."""
    require_host(who, host)
    outcome = await Migrations(ctx.state).report(host, body.model_dump())
    return ReportAnswer(accepted=outcome.accepted, reason=outcome.reason)
