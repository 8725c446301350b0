"""Traffic routes: agents report the bytes/s between guests; admins read the matrix.

::

    agent of host H ──POST /api/v1/agent/H/traffic {"interval_s", "pairs": [{"a", "b",
        "bytes_per_s"}]}──> replaces H's report (MAC ends named by the MAC index)
    admin ──GET /api/v1/traffic──> {"pairs": [{"a", "b", "bytes_per_s", "hosts", "at"}],
        "hosts": [{"host", "at", "interval_s", "stale"}]}   (busiest pair first)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from podium.api._auth import require_admin, require_host
from podium.api._context import Ctx, Who
from podium.state import put_traffic, read_traffic

router = APIRouter(prefix="/api/v1", tags=["traffic"])

MAX_PAIRS = 4096  # per report: the agent sends its busiest pairs
MAX_INTERVAL = 3600.0
# a guest name (lowercase DNS label) or a NIC's MAC (six hex octets)
ENDPOINT = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?|[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5})$"

Endpoint = Annotated[
    str,
    Field(
        pattern=ENDPOINT,
        description="a guest name, or a NIC's MAC like 52:54:00:12:34:56 (the server names it)",
    ),
]


class TrafficPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: Endpoint
    b: Endpoint
    bytes_per_s: float = Field(ge=0, allow_inf_nan=False, description="both directions")

    @model_validator(mode="after")
    def _two_ends(self) -> TrafficPair:
        if self.a.lower() == self.b.lower():
            raise ValueError(f"a and b are both {self.a!r}: a pair needs two different ends")
        return self


class TrafficReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(
        gt=0, le=MAX_INTERVAL, allow_inf_nan=False, description="seconds the rates cover"
    )
    pairs: list[TrafficPair] = Field(
        max_length=MAX_PAIRS, description=f"at most {MAX_PAIRS}: send the busiest"
    )


class TrafficStored(BaseModel):
    kept: int = Field(description="pairs stored (MACs the server does not know are dropped)")


class PairRateOut(BaseModel):
    a: str
    b: str
    bytes_per_s: float
    hosts: list[str] = Field(description="hosts whose fresh reports hold the pair")
    at: float = Field(description="server time of the newest of those reports")


class HostReport(BaseModel):
    host: str
    at: float
    interval_s: float
    stale: bool = Field(description="older than 3 intervals: left out of the pairs")


class TrafficOut(BaseModel):
    pairs: list[PairRateOut]
    hosts: list[HostReport]


@router.post(
    "/agent/{host}/traffic",
    response_model=TrafficStored,
    tags=["agent"],
    summary="Report the bytes/s between guests seen on this host (replaces its last report)",
)
async def report(host: str, body: TrafficReport, ctx: Ctx, who: Who) -> TrafficStored:
    require_host(who, host)
    pairs = [(p.a, p.b, p.bytes_per_s) for p in body.pairs]
    return TrafficStored(kept=await put_traffic(ctx.state, host, body.interval_s, pairs))


@router.get("/traffic", response_model=TrafficOut, summary="The traffic matrix between guests")
async def matrix(ctx: Ctx, who: Who) -> TrafficOut:
    require_admin(who, "reading the traffic matrix")
    return TrafficOut.model_validate((await read_traffic(ctx.state)).to_dict())
