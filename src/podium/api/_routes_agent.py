"""Agent routes: register (join or agent token), keepalive, assignments, status.

::

    agent ──register(join token)──> lease granted, Host record, agent token minted
          ──keepalive(lease)──────> ttl            (410: lease gone, register again)
          ──assignments[?watch]───> what to run    (PUT/DELETE lines)
          ──status(reports)───────> accepted / rejected (stale epoch: not yours any more)
                                    (a report may carry the guest's measured usage)
          ──networks──────────────> the networks it routes between (network rules)
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from podium.api._auth import HTTPError, require_host
from podium.api._context import NDJSON, ApiContext, Ctx, Who
from podium.api._watch import assignment_lines
from podium.api.schemas import (
    AssignmentList,
    ErrorBody,
    KeepaliveRequest,
    KeepaliveResponse,
    RegisterRequest,
    RegisterResponse,
    Rejected,
    StatusReport,
    StatusRequest,
    StatusResponse,
)
from podium.model import GuestState, HostName, HostSpec, Kind, Resources
from podium.state import Conflict, StaleEpoch, keys, loads
from podium.state._identities import routed_networks
from podium.store import LeaseNotFound

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])

LEASE_GONE = "lease expired: register again"


@router.post(
    "/register",
    response_model=RegisterResponse,
    responses={409: {"model": ErrorBody, "description": "the host is alive under another agent"}},
    summary="Register a host (join token: mints its agent token)",
)
async def register(body: RegisterRequest, ctx: Ctx, who: Who) -> RegisterResponse:
    if who.role == "agent":
        require_host(who, body.name)
    elif who.role not in ("join", "admin"):
        raise HTTPError(403, "registering a host needs a join token or the host's agent token")
    state, store = ctx.state, ctx.state.store
    existing = await state.get_record(Kind.HOST, body.name)
    live = await store.get(keys.host_live_key(body.name))
    if who.role == "join" and live is not None:
        raise HTTPError(
            409,
            f"host {body.name!r} is registered and alive: register with its agent token, "
            f"or wait up to {ctx.host_ttl} s for its lease to expire",
        )
    status_kv = await store.get(keys.host_status_key(body.name))
    old_lease = int(loads(status_kv.value).get("lease", 0)) if status_kv else 0
    lease = await store.grant(ctx.host_ttl)
    spec = HostSpec(Resources(**body.capacity.model_dump()), dict(body.labels))
    await state.register_host(
        HostName(body.name),
        spec,
        lease=lease.id,
        driver=body.driver,
        agent_version=body.agent_version,
        taints=body.taints,
    )
    if old_lease and old_lease != lease.id:
        await store.revoke(old_lease)
    host_token = None
    if who.role != "agent":
        await _revoke_agent_tokens(ctx, body.name, existing=existing is not None)
        host_token = await state.create_token("agent", host=body.name)
    if body.fenced is not None:  # placed on the timeline when it happened, not now
        f = body.fenced
        await state.emit(
            "Host",
            body.name,
            "HostFenced",
            f"host {body.name} fenced itself {f.seconds_ago:.1f} s before registering again, "
            f"killing {f.killed} guest(s): {f.reason}",
            warning=True,
            at=state.now() - f.seconds_ago,
        )
    reason = "HostReregistered" if existing else "HostJoined"
    await state.emit(
        "Host",
        body.name,
        reason,
        f"host {body.name} registered ({body.driver} driver, agent {body.agent_version})",
    )
    ctx.metrics.agent_registrations.inc()
    return RegisterResponse(
        host_token=host_token, lease=lease.id, ttl=lease.ttl, keepalive_interval=lease.ttl / 4
    )


async def _revoke_agent_tokens(ctx: ApiContext, host: str, *, existing: bool) -> None:
    """A host joining again gets a fresh agent token; the old ones stop working."""
    for hashed in await ctx.state.revoke_agent_tokens(host, scan=existing):
        ctx.auth.forget(hashed)


@router.post(
    "/{host}/keepalive",
    response_model=KeepaliveResponse,
    responses={410: {"model": ErrorBody, "description": LEASE_GONE}},
    summary="Renew the host's lease",
)
async def keepalive(host: str, body: KeepaliveRequest, ctx: Ctx, who: Who) -> KeepaliveResponse:
    require_host(who, host)
    live = await ctx.state.store.get(keys.host_live_key(host))
    if live is None or live.lease != body.lease:
        raise HTTPError(410, LEASE_GONE)
    # Renew, and record the renewal for the suspect judgement, at once: one store round
    # trip rather than two (under a rollout each waits behind a batch of writes). Both
    # fail with LeaseNotFound if the lease is gone.
    ttl, beat = await asyncio.gather(
        ctx.state.store.keepalive(body.lease),
        ctx.state.record_keepalive(host, body.lease),
        return_exceptions=True,
    )
    for failed in (ttl, beat):
        if isinstance(failed, LeaseNotFound):
            raise HTTPError(410, LEASE_GONE) from failed
    if isinstance(ttl, BaseException):
        raise ttl
    if isinstance(beat, BaseException):
        raise beat
    return KeepaliveResponse(ttl=ttl)


@router.get(
    "/{host}/assignments",
    response_model=AssignmentList,
    responses={200: {"content": {NDJSON: {}}}},
    summary="What the host should run, or watch it (?watch=1&from=REV)",
)
async def assignments(
    host: str,
    ctx: Ctx,
    who: Who,
    watch: bool = False,
    from_revision: Annotated[int, Query(alias="from", ge=0)] = 0,
) -> Response | AssignmentList:
    require_host(who, host)
    if watch:
        lines = assignment_lines(
            ctx.state, host, from_revision, heartbeat=ctx.heartbeat, stopping=ctx.stopping
        )
        return ctx.stream("assignments", lines)
    items, revision = await ctx.state.assignments(host)
    return AssignmentList(
        items=[a.to_dict() for a in items],
        revision=revision,
    )


@router.post("/{host}/status", response_model=StatusResponse, summary="Report guest states")
async def status(host: str, body: StatusRequest, ctx: Ctx, who: Who) -> StatusResponse:
    require_host(who, host)
    accepted: list[str] = []
    rejected: list[Rejected] = []
    for report in body.reports:
        try:
            changed = await _report(ctx, host, report)
        except (StaleEpoch, Conflict) as err:
            rejected.append(Rejected(guest=report.guest, reason=str(err)))
            continue
        accepted.append(report.guest)
        if changed and report.state is GuestState.FAILED:  # (GuestRunning: the controllers)
            detail = f": {report.message}" if report.message else ""
            await ctx.state.emit(
                "Guest",
                report.guest,
                "GuestFailed",
                f"guest {report.guest} failed on {host} (epoch {report.epoch}){detail}",
                warning=True,
            )
    return StatusResponse(accepted=accepted, rejected=rejected)


async def _report(ctx: ApiContext, host: str, report: StatusReport) -> bool:
    """Record one report; True if it changes the guest's state or epoch."""
    before = await ctx.state.store.get(keys.guest_status_key(report.guest))
    usage = None if report.usage is None else report.usage.model_dump()
    await ctx.state.report_guest_status(
        host, report.guest, report.epoch, report.state, report.message, usage=usage
    )
    if before is None:
        return True
    old = loads(before.value)
    return bool(
        old.get("state") != report.state.value
        or old.get("epoch") != report.epoch
        or old.get("host") != host
    )


class RoutedNetwork(BaseModel):
    """A network the hosts route, with the networks its guests may reach."""

    name: str
    vlan: int
    subnet: str
    gateway: str
    peers: list[str]


class RoutedNetworks(BaseModel):
    networks: list[RoutedNetwork]
    revision: int


@router.get(
    "/{host}/networks",
    response_model=RoutedNetworks,
    summary="The networks hosts route between: each with a rule peer (docs/profiles.md)",
)
async def networks(host: str, ctx: Ctx, who: Who) -> RoutedNetworks:
    require_host(who, host)
    routed, revision = await routed_networks(ctx.state)
    return RoutedNetworks(
        networks=[RoutedNetwork(**n) for n in routed],
        revision=revision,
    )
