"""What every route needs: the cluster state, metrics, settings; and route dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, cast

from fastapi import Depends, FastAPI, Request
from starlette.responses import StreamingResponse
from starlette.types import Send

from podium.api._auth import HTTPError, Principal, TokenAuthenticator, principal_of
from podium.api._metrics import Metrics
from podium.model import KIND_NAMES, KINDS, Kind, Manifest
from podium.state import ClusterState

NDJSON = "application/x-ndjson"


class Admission(Protocol):
    """The apply hook (the server's ``--failures-to-tolerate`` / ``--spare-host``)."""

    async def check(self, state: ClusterState, manifests: Sequence[Manifest]) -> str | None:
        """None to admit ``manifests``, else why not (one line; the apply answers 409).

        Reads only; called before the apply's transaction.
        """
        ...


class RebalanceService(Protocol):
    """Rebalancing passes on demand (``podium rebalance``); both answer JSON objects."""

    async def plan_dict(self, state: ClusterState) -> dict[str, Any]:
        """The plan a pass would make now (reads only)."""
        ...

    async def apply_dict(self, state: ClusterState) -> dict[str, Any]:
        """Request the plan's migrations (within the budget); the plan and what was made."""
        ...


@dataclass(slots=True)
class ApiContext:
    """Shared by every request of one app (``app.state.podium``)."""

    state: ClusterState
    metrics: Metrics
    auth: TokenAuthenticator
    host_ttl: int
    heartbeat: float
    is_leader: Callable[[], bool]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    admission: Admission | None = None  # None: every valid apply is admitted
    rebalancer: RebalanceService | None = None  # None: /rebalance answers 409

    def close_streams(self) -> None:
        """End every open watch stream (at shutdown, so connections can drain)."""
        self.stopping.set()

    def stream(self, name: str, lines: AsyncIterator[bytes]) -> StreamingResponse:
        """An NDJSON response over ``lines``, counted in the open-streams gauge."""
        gauge = self.metrics.watch_streams.labels(stream=name)

        async def counted() -> AsyncIterator[bytes]:
            gauge.inc()
            try:
                async for chunk in lines:
                    yield chunk
            finally:
                gauge.dec()
                aclose = getattr(lines, "aclose", None)
                if aclose is not None:
                    await aclose()

        return _NDJSONResponse(
            counted(),
            media_type=NDJSON,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )


class _NDJSONResponse(StreamingResponse):
    """Closes its line generator however the response ends (client gone, shutdown)."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def context_of(app: FastAPI) -> ApiContext:
    """The :class:`ApiContext` of an app made by :func:`podium.api.create_app`."""
    return cast(ApiContext, app.state.podium)


def _context(request: Request) -> ApiContext:
    return context_of(request.app)


Ctx = Annotated[ApiContext, Depends(_context)]
Who = Annotated[Principal, Depends(principal_of)]


def parse_kind(kind: str) -> Kind:
    """``hosts``/``host``/``Host`` → :class:`Kind`. Raises 404 for an unknown kind."""
    found = KINDS.get(kind)
    if found is None:
        raise HTTPError(404, f"unknown kind {kind!r}: expected one of {KIND_NAMES}")
    return found
