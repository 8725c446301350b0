"""Prometheus metrics of one API app, in its own registry (never the global one).

::

    MetricsMiddleware ──> requests_total{method,route,status}, request_duration_seconds
    GET /metrics ──> refresh(state) ──> store_revision, guests{state}, hosts{state}, leader
    controllers ──> observe_controller_loop(name) ──> controller_loops_total{controller}
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium.model import GuestState, HostState, Kind
from podium.state import ClusterState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the API exports, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "podium_http_requests",
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "podium_http_request_duration_seconds",
            "Time to answer an HTTP request (watch streams excluded).",
            ["method", "route"],
            registry=r,
        )
        self.store_revision = Gauge(
            "podium_store_revision", "Store revision at the last scrape.", registry=r
        )
        self.guests = Gauge("podium_guests", "Guests by state.", ["state"], registry=r)
        self.hosts = Gauge("podium_hosts", "Hosts by state.", ["state"], registry=r)
        self.leader = Gauge(
            "podium_leader", "1 while this server leads (runs the controllers).", registry=r
        )
        self.controller_loops = Counter(
            "podium_controller_loops",
            "Reconcile loops run, by controller.",
            ["controller"],
            registry=r,
        )
        self.watch_streams = Gauge(
            "podium_watch_streams", "Open watch streams, by stream.", ["stream"], registry=r
        )
        self.agent_registrations = Counter(
            "podium_agent_registrations", "Agent registrations accepted.", registry=r
        )
        self._controller_seen: dict[str, float] = {}
        self.controller_stats: Callable[[], Mapping[str, int]] | None = None

    def observe_controller_loop(self, controller: str, count: int = 1) -> None:
        """Count ``count`` reconcile loops of ``controller``."""
        self.controller_loops.labels(controller=controller).inc(count)

    def track_controller_stats(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Fold ``source()`` (cumulative loop counts per controller) in at each scrape.

        Call again with a new source when a new controller manager starts (its counts
        start from zero).
        """
        self.controller_stats = source
        self._controller_seen = {}

    def _pull_controller_stats(self) -> None:
        """Fold cumulative per-controller loop counts from ``controller_stats`` in."""
        if self.controller_stats is None:
            return
        for name, total in self.controller_stats().items():
            delta = total - self._controller_seen.get(name, 0)
            if delta > 0:
                self.observe_controller_loop(name, int(delta))
            self._controller_seen[name] = total

    async def refresh(self, state: ClusterState, *, leader: bool) -> None:
        """Update the gauges that reflect cluster state (called on each scrape)."""
        status = await state.store.status()
        self.store_revision.set(status.revision)
        self.leader.set(1 if leader else 0)
        guests, _ = await state.list_objects(Kind.GUEST)
        hosts, _ = await state.list_objects(Kind.HOST)
        by_guest = Tally(g["status"]["state"] for g in guests)
        by_host = Tally(h["status"]["state"] for h in hosts)
        for gstate in GuestState:
            self.guests.labels(state=gstate.value).set(by_guest.get(gstate.value, 0))
        for hstate in HostState:
            self.hosts.labels(state=hstate.value).set(by_host.get(hstate.value, 0))
        self._pull_controller_stats()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request by its route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=template, status=str(status)).inc()
            if b"watch=" not in scope.get("query_string", b""):
                self.metrics.latency.labels(method=method, route=template).observe(
                    time.perf_counter() - start
                )
