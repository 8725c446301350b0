"""Site DR routes (admin only): failover, drills, failback.

::

    POST /api/v1/dr/failover       {from, to, map}           ──> report (409 while `from` lives)
    POST /api/v1/dr/test           {from, to, map}           ──> report (copies on test networks)
    POST /api/v1/dr/test/cleanup   {from, to}                ──> {deleted, kept}
    POST /api/v1/dr/failback/sync  {from, to}                ──> {backups: [{guest, backup, state}]}
    POST /api/v1/dr/failback/stop  {from, to, backups}       ──> {stopping, skipped}
    POST /api/v1/dr/failback       {from, to, map, backups}  ──> report

A report is ``{"operation", "from", "to", "at", "guests": [{"guest", "profile",
"recovered", "reason", "backup", "point", "loss_s", "rpo_s", "within_rpo", "networks",
"ips"}], "recovered", "not_recovered", "already", "max_loss_s"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from podium.api._auth import require_admin
from podium.api._context import Ctx, Who
from podium.api.schemas import ErrorBody
from podium.state import (
    DrMapModel,
    dr_failback,
    dr_failback_stop,
    dr_failback_sync,
    dr_failover,
    dr_test,
    dr_test_cleanup,
)

JSONObject = dict[str, Any]
MAX_BACKUPS = 10_000

router = APIRouter(prefix="/api/v1/dr", tags=["dr"])


class Sites(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_site: str = Field(alias="from", examples=["A"], description="the site guests leave")
    to_site: str = Field(alias="to", examples=["B"], description="the site they come up on")


class MapRequest(Sites):
    map: DrMapModel = Field(default_factory=DrMapModel, description="the DR map file, parsed")


class FailbackRequest(MapRequest):
    backups: list[str] = Field(
        max_length=MAX_BACKUPS, description="the final replicas the sync step asked for"
    )


REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "refused: see the message"}
}


@router.post(
    "/failover", responses=REFUSED, summary="Recover a failed site's protected guests elsewhere"
)
async def failover(body: MapRequest, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "failing a site over")
    return await dr_failover(ctx.state, body.from_site, body.to_site, body.map)


@router.post("/test", responses=REFUSED, summary="Drill: copies of the site's guests, isolated")
async def test(body: MapRequest, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "running a DR drill")
    return await dr_test(ctx.state, body.from_site, body.to_site, body.map)


@router.post("/test/cleanup", summary="Delete what a drill made (and nothing else)")
async def test_cleanup(body: Sites, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "cleaning up a DR drill")
    return await dr_test_cleanup(ctx.state, body.from_site, body.to_site)


@router.post("/failback/sync", summary="Failback step 1: a final replica of each guest")
async def failback_sync(body: Sites, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "failing back")
    return await dr_failback_sync(ctx.state, body.from_site, body.to_site)


class StopRequest(Sites):
    backups: list[str] = Field(
        max_length=MAX_BACKUPS, description="the completed final replicas of the sync step"
    )


@router.post("/failback/stop", summary="Failback step 2: stop the guests of the final replicas")
async def failback_stop(body: StopRequest, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "failing back")
    return await dr_failback_stop(ctx.state, body.from_site, body.to_site, body.backups)


@router.post(
    "/failback", responses=REFUSED, summary="Failback step 3: re-create guests from their finals"
)
async def failback(body: FailbackRequest, ctx: Ctx, who: Who) -> JSONObject:
    require_admin(who, "failing back")
    return await dr_failback(ctx.state, body.from_site, body.to_site, body.map, body.backups)
