"""Cluster-wide routes: health, metrics, events, tokens."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from podium.api._auth import HTTPError, require_admin
from podium.api._context import NDJSON, Ctx, Who
from podium.api._metrics import CONTENT_TYPE
from podium.api._watch import event_lines
from podium.api.schemas import (
    ErrorBody,
    EventList,
    Health,
    StoreHealth,
    TokenCreated,
    TokenInfo,
    TokenList,
    TokenRequest,
)
from podium.state import keys, loads, token_id
from podium.store import StoreError

router = APIRouter(tags=["cluster"])

HEALTH_TIMEOUT = 3.0


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": ErrorBody, "description": "the store does not answer"}},
    summary="Is the server up, does its store answer, does it lead",
)
async def healthz(ctx: Ctx, who: Who) -> Health | JSONResponse:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            status = await ctx.state.store.status()
    except (StoreError, TimeoutError) as err:
        cause = str(err) or f"no answer within {HEALTH_TIMEOUT:g} s"
        return JSONResponse(
            {"ok": False, "error": f"the store does not answer: {cause}", "leader": False},
            status_code=503,
        )
    return Health(
        ok=True,
        store=StoreHealth(backend=status.backend, revision=status.revision),
        leader=ctx.is_leader(),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
    summary="Prometheus metrics (admin token)",
)
async def metrics(ctx: Ctx, who: Who) -> Response:
    require_admin(who, "reading metrics")
    await ctx.metrics.refresh(ctx.state, leader=ctx.is_leader())
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)


@router.get(
    "/api/v1/events",
    response_model=EventList,
    responses={200: {"content": {NDJSON: {}}}},
    summary="Recent cluster events, or watch them (?watch=1&from=REV)",
)
async def events(
    ctx: Ctx,
    who: Who,
    limit: Annotated[int, Query(ge=0, description="newest N events; 0: all")] = 0,
    watch: bool = False,
    from_revision: Annotated[int, Query(alias="from", ge=0)] = 0,
) -> Response | EventList:
    require_admin(who, "reading events")
    if watch:
        lines = event_lines(
            ctx.state, from_revision, heartbeat=ctx.heartbeat, stopping=ctx.stopping
        )
        return ctx.stream("events", lines)
    items, revision = await ctx.state.list_events(limit=limit)
    return EventList(items=items, revision=revision)


@router.post(
    "/api/v1/tokens",
    response_model=TokenCreated,
    tags=["tokens"],
    summary="Mint a join, admin or app token (admin token)",
)
async def create_token(body: TokenRequest, ctx: Ctx, who: Who) -> TokenCreated:
    require_admin(who, "creating tokens")
    if body.role == "app" and not body.app:
        raise HTTPError(422, "an app token needs 'app': the name of the App it may act on")
    if body.role != "app" and body.app:
        raise HTTPError(422, f"'app' is only for app tokens, not {body.role} tokens")
    token = await ctx.state.create_token(body.role, app=body.app, ttl=body.ttl)
    await ctx.state.emit("Token", token_id(token), "TokenCreated", f"{body.role} token created")
    return TokenCreated(token=token, id=token_id(token), role=body.role)


@router.get(
    "/api/v1/tokens", response_model=TokenList, tags=["tokens"], summary="List tokens (no secrets)"
)
async def list_tokens(ctx: Ctx, who: Who) -> TokenList:
    require_admin(who, "listing tokens")
    records = await ctx.state.list_tokens()
    return TokenList(items=[TokenInfo.model_validate(r) for r in records])


@router.delete(
    "/api/v1/tokens/{token_id}",
    tags=["tokens"],
    summary="Revoke a token by its id (admin token)",
)
async def revoke_token(token_id: str, ctx: Ctx, who: Who) -> dict[str, bool]:
    require_admin(who, "revoking tokens")
    res = await ctx.state.store.range(keys.TOKENS)
    for kv in res.kvs:
        if loads(kv.value).get("id") == token_id:
            await ctx.state.store.delete(kv.key)
            ctx.auth.forget(kv.key[len(keys.TOKENS) :])
            await ctx.state.emit("Token", token_id, "TokenRevoked", "token revoked")
            return {"deleted": True}
    raise HTTPError(404, f"token {token_id!r} not found: see GET /api/v1/tokens for ids")
