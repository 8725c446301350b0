"""Request and response bodies of the wire API (pydantic, at the edge only).

Views of objects (``items`` of a list, the body of a get) are the plain JSON that
:class:`podium.state.ClusterState` builds; they are typed loosely here on purpose,
so that state is the one place that decides their shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from podium.model import GuestState
from podium.model._qos import MAX_CONSTRAINTS, TOLERATION_RE

JSONObject = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: one line that says what went wrong and what to do."""

    error: str = Field(examples=["Guest 'db-1' not found"])


# -- objects ---------------------------------------------------------------------------


class ObjectList(BaseModel):
    """Views of every object of a kind, read at ``revision`` (watch from ``revision + 1``)."""

    items: list[JSONObject]
    revision: int


class Deleted(BaseModel):
    deleted: bool
    revision: int


class ApplyRequest(_Body):
    """Documents to create or update in one transaction: all or nothing."""

    source: str = Field(
        default="<api>", description="where the documents came from (shown in errors)"
    )
    documents: list[Any] = Field(
        description="manifest documents, each with kind, name and spec",
        examples=[[{"kind": "Guest", "name": "db-1", "spec": {"image": "tiny"}}]],
    )


class ApplyResultItem(BaseModel):
    kind: str
    name: str
    action: Literal["created", "configured", "unchanged"]


class ApplyResponse(BaseModel):
    results: list[ApplyResultItem]
    revision: int


class CordonResponse(BaseModel):
    name: str
    cordoned: bool


class EventList(BaseModel):
    items: list[JSONObject]
    revision: int


# -- tokens ------------------------------------------------------------------------------


class TokenRequest(_Body):
    """Mint a bearer token. ``app`` is required for (and only for) the ``app`` role."""

    role: Literal["join", "admin", "app"]
    ttl: Annotated[int, Field(ge=0, le=10 * 365 * 86400)] = Field(
        default=0, description="seconds until the token expires; 0: never"
    )
    app: str | None = None


class TokenCreated(BaseModel):
    token: str = Field(description="the secret: shown once, stored only hashed")
    id: str
    role: str


class TokenInfo(BaseModel):
    id: str
    role: str
    created: float
    expires: float | None = None
    host: str | None = None
    app: str | None = None


class TokenList(BaseModel):
    items: list[TokenInfo]


# -- agents ------------------------------------------------------------------------------


class Capacity(_Body):
    cpu: Annotated[float, Field(gt=0, le=1_000_000)]
    memory_mib: Annotated[int, Field(gt=0)]
    iops: Annotated[int, Field(ge=0)] = 0
    net_mbps: Annotated[int, Field(ge=0)] = 0


class FenceReport(_Body):
    """The agent fenced itself (killed its guests) since it last registered."""

    reason: Annotated[str, Field(max_length=500)]
    seconds_ago: Annotated[float, Field(ge=0, le=10 * 365 * 86400)] = Field(
        description="how long before this request, on the agent's own clock"
    )
    killed: Annotated[int, Field(ge=0)] = 0


class RegisterRequest(_Body):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", examples=["host-1"])
    capacity: Capacity
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"rack": "r1"}])
    taints: dict[str, str] = Field(
        default_factory=dict,
        examples=[{"gpu": "a100"}],
        description="only guests tolerating every taint are placed on this host",
    )
    driver: str = "sim"
    agent_version: str = "0.0.0"
    fenced: FenceReport | None = Field(
        default=None, description="set when registering again after a self-fence"
    )

    @field_validator("taints")
    @classmethod
    def _check_taints(cls, taints: dict[str, str]) -> dict[str, str]:
        return check_taints(taints)


def check_taints(taints: dict[str, str]) -> dict[str, str]:
    """Taints as a host registers them: ``{KEY: VALUE}``, named like tolerations."""
    if len(taints) > MAX_CONSTRAINTS:
        raise ValueError(f"{len(taints)} taints; at most {MAX_CONSTRAINTS}")
    for key, value in taints.items():
        if not value or not TOLERATION_RE.match(f"{key}={value}"):
            raise ValueError(
                f"taint {key}={value} is not valid: use KEY=VALUE (KEY: lowercase letters, "
                "digits, '-', '_', '.'; VALUE: letters, digits, '-', '_', '.'), e.g. gpu=a100"
            )
    return taints


class RegisterResponse(BaseModel):
    host_token: str | None = Field(
        description="a new agent token for this host when registering with a join token; "
        "save it and use it from then on"
    )
    lease: int
    ttl: int
    keepalive_interval: float


class KeepaliveRequest(_Body):
    lease: int


class KeepaliveResponse(BaseModel):
    ttl: int


class AssignmentList(BaseModel):
    """What a host should run: ``{"guest", "uid", "epoch", "spec"}`` per item."""

    items: list[JSONObject]
    revision: int


Measure = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class GuestUsage(_Body):
    """What a guest uses, as measured on its host (the reservations' units)."""

    cpu: Measure = 0.0  # cores (CPU seconds per second)
    memory_mib: Measure = 0.0
    iops: Measure = 0.0
    net_mbps: Measure = 0.0  # both directions together


class StatusReport(_Body):
    guest: str
    epoch: Annotated[int, Field(ge=0)]
    state: GuestState
    message: str = ""
    usage: GuestUsage | None = None  # optional: measured usage (the rebalancer reads it)


class StatusRequest(_Body):
    reports: list[StatusReport]


class Rejected(BaseModel):
    guest: str
    reason: str


class StatusResponse(BaseModel):
    accepted: list[str]
    rejected: list[Rejected]


# -- health ------------------------------------------------------------------------------


class StoreHealth(BaseModel):
    backend: str
    revision: int


class Health(BaseModel):
    ok: bool
    store: StoreHealth
    leader: bool
