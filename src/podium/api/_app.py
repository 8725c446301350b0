"""The app factory and the one place that turns errors into ``{"error": ...}`` answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import podium
from podium.api import (
    _routes_agent,
    _routes_backups,
    _routes_cluster,
    _routes_console,
    _routes_dr,
    _routes_migrations,
    _routes_objects,
    _routes_profiles,
    _routes_rebalance,
    _routes_traffic,
)
from podium.api._auth import AuthMiddleware, HTTPError, TokenAuthenticator
from podium.api._context import Admission, ApiContext, RebalanceService
from podium.api._metrics import Metrics, MetricsMiddleware
from podium.api.schemas import ErrorBody
from podium.state import ClusterState, NotFound, StateError
from podium.store import InvalidRequest, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

DESCRIPTION = """The podium control plane API.

Every endpoint needs `Authorization: Bearer <token>`. Errors are `{"error": "..."}`,
one line saying what to do. List endpoints with `?watch=1&from=REV` stream NDJSON,
one change per line, with `BOOKMARK` heartbeats; resume with `from` = last revision + 1.
"""

_bearer = HTTPBearer(auto_error=False, description="a podium token (admin, join, agent, app)")


def create_app(
    state: ClusterState,
    *,
    metrics: Metrics | None = None,
    host_ttl: int = 8,
    is_leader: Callable[[], bool] | None = None,
    heartbeat: float = 10.0,
    token_cache_ttl: float = 2.0,
    clock: Callable[[], float] = time.time,
    admission: Admission | None = None,
    rebalancer: RebalanceService | None = None,
) -> FastAPI:
    """Build the API app over ``state``.

    ``metrics`` defaults to a fresh :class:`Metrics` (its own registry);
    ``host_ttl`` is the lease TTL granted to registering agents; ``is_leader`` tells
    ``/healthz`` whether this server runs the controllers; ``heartbeat`` is the
    BOOKMARK interval of watch streams; ``admission`` checks applies (None: admit all);
    ``rebalancer`` answers ``/rebalance``. :func:`context_of` gives the app's context
    (call ``close_streams()`` on it before shutting the server down).
    """
    metrics = metrics if metrics is not None else Metrics()
    app = FastAPI(
        title="podium",
        version=podium.__version__,
        description=DESCRIPTION,
        dependencies=[Depends(_bearer)],
        responses={
            401: {"model": ErrorBody, "description": "missing, unknown or expired token"},
            403: {"model": ErrorBody, "description": "the token's role or scope does not allow it"},
        },
    )
    auth = TokenAuthenticator(state, ttl=token_cache_ttl, clock=clock)
    app.state.podium = ApiContext(
        state=state,
        metrics=metrics,
        auth=auth,
        host_ttl=host_ttl,
        heartbeat=heartbeat,
        is_leader=is_leader or (lambda: False),
        admission=admission,
        rebalancer=rebalancer,
    )
    app.include_router(_routes_cluster.router)
    app.include_router(_routes_agent.router)
    app.include_router(_routes_backups.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_backups.agent_router)
    app.include_router(_routes_profiles.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_console.router)
    app.include_router(_routes_migrations.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_traffic.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_rebalance.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_dr.router)  # before objects' /{kind} catch-alls
    app.include_router(_routes_objects.router)
    _install_error_handlers(app)
    app.add_middleware(AuthMiddleware, authenticator=auth)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc else "request"
        path = ".".join(loc[1:])
        place = {"body": "body field", "query": "query parameter", "path": "path parameter"}.get(
            where, where
        )
        if e.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        msg = str(e.get("msg", "is invalid"))
        if e.get("type") == "missing":
            msg = "is required"
        parts.append(f"{place} '{path}' {msg}" if path else f"{place}: {msg}")
    return "invalid request: " + "; ".join(parts) + " (see /docs)"


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPError)
        return _error(exc.status, exc.message)

    async def starlette_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no such endpoint: {where} (see /docs)"
        elif exc.status_code == 405:
            message = f"method not allowed: {where} (see /docs)"
        else:
            message = str(exc.detail)
        return JSONResponse(
            {"error": message}, status_code=exc.status_code, headers=dict(exc.headers or {})
        )

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(422, _validation_message(exc))

    async def state_error(_: Request, exc: Exception) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 409  # Conflict, StaleEpoch
        return _error(status, str(exc))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StoreUnavailable):
            return _error(503, f"the store did not answer: {exc}; try again")
        if isinstance(exc, InvalidRequest):
            return _error(422, f"the store refused the request: {exc}")
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return _error(500, f"store error: {exc}")

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}: {exc}): see the server log")

    handlers: dict[type[Exception], Any] = {
        HTTPError: http_error,
        StarletteHTTPException: starlette_error,
        RequestValidationError: validation_error,
        StateError: state_error,
        StoreError: store_error,
        Exception: internal_error,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
