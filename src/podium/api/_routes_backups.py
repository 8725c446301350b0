"""Backup routes: request, list, get, restore; and the agent's backup reports.

::

    admin / app (own guests) ──POST /api/v1/backups {guest, mode, target}──> 202 {"backup": record}
                             ──GET  /api/v1/backups[?guest=G]──────> {"items", "revision"}
                             ──GET  /api/v1/backups/{id}───────────> record
    admin ──POST /api/v1/backups/{id}/restore {as}──> 201 {"guest": view}
    agent ──POST /api/v1/agent/{host}/backups {guest, id, state, ...}──> {"accepted", "reason"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from podium.api._auth import HTTPError, Principal, require_admin, require_host, require_reader
from podium.api._context import ApiContext, Ctx, Who
from podium.api.schemas import ErrorBody
from podium.model import Kind
from podium.model.manifest import NAME_HINT, NAME_RE
from podium.state import (
    create_backup,
    get_backup,
    list_backups,
    report_backup,
    restore_backup,
)

JSONObject = dict[str, Any]

router = APIRouter(prefix="/api/v1/backups", tags=["backups"])
agent_router = APIRouter(prefix="/api/v1/agent", tags=["agent"])


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guest: str = Field(examples=["db-1"])
    mode: Literal["auto", "full", "incremental"] = Field(
        default="auto",
        description="auto: incremental when a completed backup of this guest exists, else full",
    )
    target: Literal["local", "replica"] = Field(
        default="local",
        description="local: the host's backups folder; replica: its replica folder (the "
        "other site's storage); each target has its own chain",
    )


class BackupCreated(BaseModel):
    backup: JSONObject


class BackupList(BaseModel):
    items: list[JSONObject]
    revision: int


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    as_name: str | None = Field(
        default=None, alias="as", description="the new guest's name (default: the original)"
    )


class RestoredGuest(BaseModel):
    guest: JSONObject


class BackupProgress(BaseModel):
    done: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=0)]


class BackupReport(BaseModel):
    """One step of a backup, from the agent of the guest's host."""

    model_config = ConfigDict(extra="ignore")  # newer agents may send more

    guest: str
    id: str
    state: Literal["running", "completed", "failed"]
    path: str | None = None
    volumes: dict[str, str] | None = None  # completed: each LUN volume id -> its backup file
    mode: Literal["full", "incremental"] | None = None
    bytes: Annotated[int, Field(ge=0)] | None = None
    duration_ms: Annotated[float, Field(ge=0)] | None = None
    progress: BackupProgress | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _completed_has_path(self) -> BackupReport:
        if self.state == "completed" and not self.path:
            raise ValueError("a completed backup report needs 'path' (the backup image)")
        return self


class ReportAnswer(BaseModel):
    accepted: bool
    reason: str


APP_SCOPE = "an app token acts only on App {app!r} and its guests"


async def _require_guest(ctx: ApiContext, who: Principal, guest: str, what: str) -> None:
    """Admins: any guest; app tokens: their App's guests only."""
    require_reader(who, what)
    if who.is_admin:
        return
    record = await ctx.state.get_record(Kind.GUEST, guest)
    if record is None or record.get("owner") != who.app:
        raise HTTPError(403, f"{what}: " + APP_SCOPE.format(app=who.app))


def _may_see(who: Principal, backup: JSONObject) -> bool:
    return who.is_admin or (who.role == "app" and backup.get("owner") == who.app)


@router.post(
    "",
    status_code=202,
    response_model=BackupCreated,
    responses={409: {"model": ErrorBody, "description": "not running, or busy"}},
    summary="Back up a running guest (its host snapshots it while it runs)",
)
async def create(body: BackupRequest, ctx: Ctx, who: Who) -> BackupCreated:
    await _require_guest(ctx, who, body.guest, "backing up a guest")
    record = await create_backup(ctx.state, body.guest, body.mode, target=body.target)
    return BackupCreated(backup=record)


@router.get("", response_model=BackupList, summary="List backups (of one guest: ?guest=G)")
async def list_all(
    ctx: Ctx,
    who: Who,
    guest: Annotated[str | None, Query(description="only this guest's backups")] = None,
) -> BackupList:
    require_reader(who, "reading backups")
    items, revision = await list_backups(ctx.state, guest)
    return BackupList(items=[b for b in items if _may_see(who, b)], revision=revision)


@router.get("/{backup_id}", summary="Get one backup")
async def get_one(backup_id: str, ctx: Ctx, who: Who) -> JSONObject:
    require_reader(who, "reading backups")
    record = await get_backup(ctx.state, backup_id)
    if not _may_see(who, record):
        raise HTTPError(403, "reading this backup: " + APP_SCOPE.format(app=who.app))
    return record


@router.post(
    "/{backup_id}/restore",
    status_code=201,
    response_model=RestoredGuest,
    responses={409: {"model": ErrorBody, "description": "the name is taken, or not completed"}},
    summary="Create a guest from a completed backup (fresh MACs and IPs)",
)
async def restore(
    backup_id: str, ctx: Ctx, who: Who, body: RestoreRequest | None = None
) -> RestoredGuest:
    require_admin(who, "restoring a backup")
    as_name = body.as_name if body else None
    if as_name is not None and not NAME_RE.match(as_name):
        raise HTTPError(422, f"bad name {as_name!r} to restore as: use {NAME_HINT}")
    name = await restore_backup(ctx.state, backup_id, as_name)
    return RestoredGuest(guest=await ctx.state.get_object(Kind.GUEST, name))


@agent_router.post(
    "/{host}/backups", response_model=ReportAnswer, summary="Report one step of a backup"
)
async def report(host: str, body: BackupReport, ctx: Ctx, who: Who) -> ReportAnswer:
    require_host(who, host)
    accepted, reason = await report_backup(ctx.state, host, body.model_dump(exclude_none=True))
    return ReportAnswer(accepted=accepted, reason=reason)
