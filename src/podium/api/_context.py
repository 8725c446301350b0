"""What every route needs: the cluster state, metrics, settings; and route dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, FastAPI, Request
from starlette.responses import StreamingResponse
from starlette.types import Send

from podium.api._auth import HTTPError, Principal, TokenAuthenticator, principal_of
from podium.api._metrics import Metrics
from podium.model import KINDS, Kind
from podium.state import ClusterState

NDJSON = "application/x-ndjson"


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
        raise HTTPError(404, f"unknown kind {kind!r}: expected one of apps, guests, hosts")
    return found
