"""/healthz and /metrics: store status, leadership, per-app registries."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from podium.api import Metrics, create_app
from podium.state import ClusterState
from podium.store.memory import MemoryStore

from .conftest import MakeClient
from .helpers import assert_one_line_error, guest_doc


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_healthz_reports_store_and_leadership(
    admin: httpx.AsyncClient, leader: dict[str, bool], store: MemoryStore
) -> None:
    body = (await admin.get("/healthz")).json()
    assert body == {
        "ok": True,
        "store": {"backend": "memory", "revision": await store.revision()},
        "leader": False,
    }
    leader["leading"] = True
    assert (await admin.get("/healthz")).json()["leader"] is True


async def test_healthz_is_503_when_the_store_does_not_answer(
    admin: httpx.AsyncClient, store: MemoryStore
) -> None:
    assert (await admin.get("/healthz")).status_code == 200  # token now cached
    await store.close()
    response = await admin.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and "store does not answer" in body["error"]


async def test_metrics_count_requests_and_reflect_cluster_state(
    admin: httpx.AsyncClient, leader: dict[str, bool], store: MemoryStore
) -> None:
    leader["leading"] = True
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a"), guest_doc("b")]})
    await admin.get("/api/v1/guests/a")
    await admin.get("/api/v1/guests/zz")
    response = await admin.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    route = "/api/v1/{kind}/{name}"
    assert (
        got[
            ("podium_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
        ]
        == 1
    )
    assert (
        got[
            ("podium_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))
        ]
        == 1
    )
    assert got[("podium_guests", (("state", "pending"),))] == 2
    assert got[("podium_guests", (("state", "running"),))] == 0
    assert got[("podium_leader", ())] == 1
    assert got[("podium_store_revision", ())] == await store.revision()


async def test_metrics_need_an_admin_token(make_client: MakeClient, state: ClusterState) -> None:
    agent = make_client(await state.create_token("agent", host="h1"))
    assert_one_line_error(await agent.get("/metrics"), 403, "admin token")


async def test_each_app_has_its_own_registry(state: ClusterState, app: FastAPI) -> None:
    first, second = Metrics(), Metrics()
    create_app(state, metrics=first)
    create_app(state, metrics=second)  # no "duplicated timeseries" error
    first.observe_controller_loop("placement", 3)
    assert first.registry is not second.registry
    assert (
        samples(first.render().decode())[
            ("podium_controller_loops_total", (("controller", "placement"),))
        ]
        == 3
    )
    assert ("podium_controller_loops_total", (("controller", "placement"),)) not in samples(
        second.render().decode()
    )


def test_controller_stats_are_folded_in_as_deltas() -> None:
    metrics = Metrics()
    totals = {"app": 2, "placement": 5}
    metrics.track_controller_stats(lambda: totals)
    metrics._pull_controller_stats()
    totals["placement"] = 7
    metrics._pull_controller_stats()
    restarted = {"placement": 3}  # a new manager (re-elected) counts from zero
    metrics.track_controller_stats(lambda: restarted)
    metrics._pull_controller_stats()
    got = samples(metrics.render().decode())
    assert got[("podium_controller_loops_total", (("controller", "placement"),))] == 10
    assert got[("podium_controller_loops_total", (("controller", "app"),))] == 2
