"""Rebalancing on demand (admin).

::

    GET  /api/v1/rebalance/plan ──> {"moves": [{guest, from, to, reason, benefit, cost}],
                                     budget, hot_before, hot_after, imbalance_*, notes, policy}
    POST /api/v1/rebalance      ──> the same, plus "requested" (migration ids) and "skipped"

Both run one pass of the server's rebalancer (its ``--rebalance-*`` policy, budget and
hysteresis); the migrations it requests go through the same records and controller as
``podium guest migrate``. 409 when the app was built without a rebalancer
(``create_app(rebalancer=None)``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from podium.api._auth import HTTPError, require_admin
from podium.api._context import Ctx, RebalanceService, Who
from podium.api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1", tags=["rebalance"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "this server does not rebalance"},
}


def _service(ctx: Ctx) -> RebalanceService:
    if ctx.rebalancer is None:
        raise HTTPError(
            409, "this API has no rebalancer configured: ask a podium server (podium server)"
        )
    return ctx.rebalancer


@router.get(
    "/rebalance/plan",
    responses=_ERRORS,
    summary="The live migrations one rebalancing pass would request now, and why",
)
async def rebalance_plan(ctx: Ctx, who: Who) -> dict[str, Any]:
    require_admin(who, "planning a rebalance")
    return await _service(ctx).plan_dict(ctx.state)


@router.post(
    "/rebalance",
    responses=_ERRORS,
    summary="Run one rebalancing pass now (within the migration budget)",
)
async def rebalance(ctx: Ctx, who: Who) -> dict[str, Any]:
    require_admin(who, "rebalancing")
    return await _service(ctx).apply_dict(ctx.state)
