"""The apply hook: an app that would break the failover promise is refused with 409."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from podium.api import create_app
from podium.controller._admission import AdmissionControl
from podium.model import HostName, HostSpec, Kind, Resources
from podium.state import ClusterState

from .conftest import Clock

CAP = Resources(cpu=4, memory_mib=8192, iops=1000, net_mbps=1000)


@pytest.fixture
def app(state: ClusterState, clock: Clock) -> FastAPI:
    return create_app(state, host_ttl=4, clock=clock, admission=AdmissionControl(failures=1))


async def three_hosts(state: ClusterState) -> None:
    for name in ("h1", "h2", "h3"):
        lease = await state.store.grant(600)
        await state.register_host(
            HostName(name), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
        )


def web(replicas: int) -> dict[str, object]:
    spec = {"replicas": replicas, "image": "tiny", "request": {"cpu": 2, "memory_mib": 1024}}
    return {"kind": "App", "name": "web", "spec": spec}


async def test_an_app_past_the_promise_is_refused_and_a_smaller_one_admitted(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await three_hosts(state)
    refused = await admin.post("/api/v1/apply", json={"source": "web.yaml", "documents": [web(5)]})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error.startswith("web.yaml: refused: app web (5 x cpu 2, memory_mib 1024)")
    assert "short of cpu 2" in error and "--failures-to-tolerate 0" in error
    assert await state.get_record(Kind.APP, "web") is None  # nothing was written
    admitted = await admin.post("/api/v1/apply", json={"source": "web.yaml", "documents": [web(4)]})
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["results"][0]["action"] == "created"


async def test_a_profile_wearer_is_admitted_on_the_request_its_qos_class_gives_it(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await three_hosts(state)
    big = {"kind": "Profile", "name": "big", "spec": {"qos": {"cpu": {"reservation": 4}}}}
    guest = {"kind": "Guest", "name": "g", "spec": {"profile": "big", "request": {"cpu": 1}}}
    ok = await admin.post("/api/v1/apply", json={"source": "a.yaml", "documents": [big, guest]})
    assert ok.status_code == 200, ok.text  # 4 of 12 CPUs: a host's loss still fits
    more = [{**guest, "name": f"g{i}"} for i in range(2)]  # +8 CPUs by the class, not +2
    refused = await admin.post("/api/v1/apply", json={"source": "b.yaml", "documents": more})
    assert refused.status_code == 409, refused.text
    assert "cpu 4" in refused.json()["error"]
