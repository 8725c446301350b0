"""Object routes: list/watch, get, delete, apply, cordon.

Every write goes through :class:`ClusterState` in one transaction; a route only
validates, checks scope, and translates state errors into HTTP answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from podium.api._auth import HTTPError, Principal, app_may_see, require_admin, require_reader
from podium.api._context import NDJSON, Ctx, Who, parse_kind
from podium.api._watch import kind_lines
from podium.api.schemas import (
    ApplyRequest,
    ApplyResponse,
    ApplyResultItem,
    CordonResponse,
    Deleted,
    ObjectList,
)
from podium.model import Kind, Manifest, ManifestError, validate_document
from podium.store import InvalidRequest

router = APIRouter(prefix="/api/v1", tags=["objects"])

FromRevision = Annotated[
    int,
    Query(
        alias="from",
        ge=0,
        description="watch: first revision to stream (0: send every current object first)",
    ),
]
WATCH_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            NDJSON: {
                "example": '{"type": "MODIFIED", "object": {"kind": "Guest", "name": "web-1"}, '
                '"revision": 42}'
            }
        },
        "description": "with ?watch=1: one JSON line per change, BOOKMARK heartbeats",
    }
}


def _visible(principal: Principal) -> Any:
    return None if principal.is_admin else (lambda view: app_may_see(principal, view))


@router.post(
    "/apply",
    response_model=ApplyResponse,
    summary="Create or update objects in one transaction (all or nothing)",
)
async def apply(body: ApplyRequest, ctx: Ctx, who: Who) -> ApplyResponse:
    if who.role not in ("admin", "app"):
        require_admin(who, "applying manifests")
    if not body.documents:
        raise HTTPError(422, f"{body.source}: no documents to apply")
    manifests: list[Manifest] = []
    seen: dict[tuple[Kind, str], int] = {}
    for index, doc in enumerate(body.documents, start=1):
        try:
            manifest = validate_document(doc, source=body.source, document=index)
        except ManifestError as err:
            raise HTTPError(422, str(err)) from err
        key = (manifest.kind, manifest.name)
        if key in seen:
            raise HTTPError(
                422,
                f"{body.source}: document {index}: {manifest.kind.value} {manifest.name!r} is "
                f"already declared in document {seen[key]}; give each object a unique name",
            )
        seen[key] = index
        if who.role == "app" and (manifest.kind is not Kind.APP or manifest.name != who.app):
            raise HTTPError(
                403,
                f"{body.source}: document {index}: an app token may only apply App "
                f"{who.app!r}, not {manifest.kind.value} {manifest.name!r}",
            )
        manifests.append(manifest)
    refusal = ctx.admission and await ctx.admission.check(ctx.state, manifests)
    if refusal:
        raise HTTPError(409, f"{body.source}: refused: {refusal}")
    try:
        result = await ctx.state.apply(manifests)
    except InvalidRequest as err:  # e.g. more documents than one transaction may hold
        raise HTTPError(
            422,
            f"{body.source}: {len(manifests)} documents cannot be applied all or nothing "
            f"({err}): split them into smaller applies",
        ) from err
    await _emit_applied(ctx, body.source, result.actions)
    return ApplyResponse(
        results=[
            ApplyResultItem.model_validate({"kind": k, "name": n, "action": a})
            for k, n, a in result.actions
        ],
        revision=result.revision,
    )


async def _emit_applied(ctx: Ctx, source: str, actions: tuple[tuple[str, str, str], ...]) -> None:
    """One event per apply: about the object if one changed, else a summary."""
    changed = [(k, n, a) for k, n, a in actions if a != "unchanged"]
    if len(changed) == 1:
        kind, name, action = changed[0]
        await ctx.state.emit(kind, name, action.capitalize(), f"{kind} {name} {action} ({source})")
    elif changed:
        names = ", ".join(f"{k} {n} {a}" for k, n, a in changed[:10])
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        await ctx.state.emit(
            "Manifest", source, "Applied", f"{len(changed)} objects changed: {names}{more}"
        )


async def _cordon(ctx: Ctx, who: Who, name: str, cordoned: bool) -> CordonResponse:
    require_admin(who, "cordoning a host")
    await ctx.state.set_cordoned(name, cordoned)
    reason = "Cordoned" if cordoned else "Uncordoned"
    await ctx.state.emit("Host", name, reason, f"host {name} {reason.lower()}")
    return CordonResponse(name=name, cordoned=cordoned)


@router.post(
    "/hosts/{name}/cordon", response_model=CordonResponse, summary="Stop placing on a host"
)
async def cordon(name: str, ctx: Ctx, who: Who) -> CordonResponse:
    return await _cordon(ctx, who, name, True)


@router.post(
    "/hosts/{name}/uncordon", response_model=CordonResponse, summary="Place on a host again"
)
async def uncordon(name: str, ctx: Ctx, who: Who) -> CordonResponse:
    return await _cordon(ctx, who, name, False)


@router.get(
    "/{kind}",
    response_model=ObjectList,
    responses=WATCH_DOC,
    summary="List objects of a kind, or watch them (?watch=1&from=REV)",
)
async def list_objects(
    kind: str,
    ctx: Ctx,
    who: Who,
    watch: Annotated[bool, Query(description="stream changes as NDJSON")] = False,
    from_revision: FromRevision = 0,
) -> Response | ObjectList:
    found = parse_kind(kind)
    require_reader(who, f"reading {found.value}s")
    if who.role == "app" and found is Kind.HOST:
        raise HTTPError(403, f"an app token acts only on App {who.app!r} and its guests")
    visible = _visible(who)
    if watch:
        lines = kind_lines(
            ctx.state,
            found,
            from_revision,
            visible=visible,
            heartbeat=ctx.heartbeat,
            stopping=ctx.stopping,
        )
        return ctx.stream(found.value.lower(), lines)
    items, revision = await ctx.state.list_objects(found)
    if visible is not None:
        items = [view for view in items if visible(view)]
    return ObjectList(items=items, revision=revision)


@router.get("/{kind}/{name}", summary="Get one object (spec and status)")
async def get_object(kind: str, name: str, ctx: Ctx, who: Who) -> dict[str, Any]:
    found = parse_kind(kind)
    require_reader(who, f"reading {found.value}s")
    view = await ctx.state.get_object(found, name)
    if not app_may_see(who, view):
        raise HTTPError(403, f"an app token acts only on App {who.app!r} and its guests")
    return view


@router.delete("/{kind}/{name}", response_model=Deleted, summary="Delete one object")
async def delete_object(kind: str, name: str, ctx: Ctx, who: Who) -> Deleted:
    found = parse_kind(kind)
    require_admin(who, f"deleting a {found.value}")
    revision = await ctx.state.delete_object(found, name)
    await ctx.state.emit(found.value, name, "Deleted", f"{found.value} {name} deleted")
    return Deleted(deleted=True, revision=revision)
