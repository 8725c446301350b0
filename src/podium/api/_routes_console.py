"""Console routes: the agent pushes a guest's serial console tail; readers get it.

::

    agent of the guest's host ──PUT /api/v1/agent/{host}/console/{guest} {"text"}──> stored
        (last 16 KiB kept; 409 from any other host)
    admin / app (own guests) ──GET /api/v1/guests/{name}/console──> {"guest", "host",
        "text", "updated"}; 404 "no console captured for guest 'x' yet"
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from podium.api._auth import HTTPError, require_host, require_reader
from podium.api._context import Ctx, Who
from podium.api.schemas import ErrorBody
from podium.model import Kind
from podium.state import CONSOLE_LIMIT, get_console, put_console

router = APIRouter(prefix="/api/v1", tags=["console"])

MAX_BODY_TEXT = 1024 * 1024  # a push larger than this is refused (the server keeps 16 KiB)


class ConsolePush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(max_length=MAX_BODY_TEXT)] = Field(
        description=f"the console's tail; the server keeps the last {CONSOLE_LIMIT} bytes"
    )


class ConsoleStored(BaseModel):
    stored: int = Field(description="bytes kept")


class Console(BaseModel):
    guest: str
    host: str | None
    text: str
    updated: float | None


@router.put(
    "/agent/{host}/console/{guest}",
    response_model=ConsoleStored,
    tags=["agent"],
    responses={409: {"model": ErrorBody, "description": "the guest is not bound to this host"}},
    summary="Store a guest's serial console tail (from the guest's host only)",
)
async def push(host: str, guest: str, body: ConsolePush, ctx: Ctx, who: Who) -> ConsoleStored:
    require_host(who, host)
    stored = await put_console(ctx.state, host, guest, body.text)
    return ConsoleStored(stored=stored)


@router.get(
    "/guests/{name}/console",
    response_model=Console,
    responses={404: {"model": ErrorBody, "description": "unknown guest, or nothing captured"}},
    summary="A guest's serial console, as its host last captured it",
)
async def read(name: str, ctx: Ctx, who: Who) -> Console:
    require_reader(who, "reading a guest's console")
    if not who.is_admin:
        record = await ctx.state.get_record(Kind.GUEST, name)
        if record is None or record.get("owner") != who.app:
            raise HTTPError(403, f"an app token acts only on App {who.app!r} and its guests")
    return Console.model_validate(await get_console(ctx.state, name))
