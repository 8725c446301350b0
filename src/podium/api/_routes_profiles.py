"""Profile routes beyond apply/get/delete: cloning a profile into an instant cluster.

::

    admin ──POST /api/v1/profiles/{name}/clone {count, spread}──> 201 {profiles, guests, revision}

A clone request is admitted as a whole (admission control sees every new guest), then
applied in transactions of whole (profile, guest) pairs: each pair is created with all
its addresses or not at all. A failure part-way answers the error and leaves the pairs
already created in place (their names are in the error), so a retry clones the rest.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from podium.api._auth import HTTPError, require_admin
from podium.api._context import Ctx, Who
from podium.model import Spread
from podium.state import ClonePair, StateError, plan_clone
from podium.store import InvalidRequest

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"])
FIRST_CHUNK = 8  # pairs per transaction to try first; halved while the store refuses the size


class CloneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=1, le=1000, description="how many clones")] = 1
    spread: Spread | None = Field(
        default=None, description="clones' guests never share this domain: host | rack | site"
    )


class CloneResponse(BaseModel):
    source: str
    profiles: list[str]
    guests: list[str]
    revision: int


@router.post(
    "/{name}/clone",
    status_code=201,
    response_model=CloneResponse,
    summary="Clone a profile (and its guest) N times with fresh addresses from its pools",
)
async def clone(name: str, body: CloneRequest, ctx: Ctx, who: Who) -> CloneResponse:
    require_admin(who, "cloning a profile")
    plan = await plan_clone(ctx.state, name, body.count, spread=body.spread)
    manifests = [m for pair in plan.pairs for m in pair.manifests]
    refusal = ctx.admission and await ctx.admission.check(ctx.state, manifests)
    if refusal:
        raise HTTPError(409, f"cloning Profile {name!r}: refused: {refusal}")
    done: list[ClonePair] = []
    revision = 0
    chunk = FIRST_CHUNK
    todo = list(plan.pairs)
    while todo:  # bounded: each round creates pairs or halves chunk (down to one pair)
        batch = todo[:chunk]
        try:
            result = await ctx.state.apply([m for pair in batch for m in pair.manifests])
        except InvalidRequest as err:
            if chunk > 1:
                chunk //= 2
                continue
            raise HTTPError(422, f"cloning Profile {name!r}: {_partial(done)}{err}") from err
        except StateError as err:
            raise type(err)(f"cloning Profile {name!r}: {_partial(done)}{err}") from err
        done += batch
        todo = todo[len(batch) :]
        revision = result.revision
    profiles = [p.profile.name for p in done]
    guests = [p.guest.name for p in done if p.guest is not None]
    shown = ", ".join(profiles[:10]) + (
        f" and {len(profiles) - 10} more" if len(profiles) > 10 else ""
    )
    await ctx.state.emit("Profile", name, "Cloned", f"Profile {name} cloned {len(done)}x: {shown}")
    return CloneResponse(source=name, profiles=profiles, guests=guests, revision=revision)


def _partial(done: list[ClonePair]) -> str:
    if not done:
        return ""
    return f"created {', '.join(p.profile.name for p in done)} before this error: "
