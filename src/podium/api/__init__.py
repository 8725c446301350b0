"""The podium HTTP API: FastAPI app over :class:`podium.state.ClusterState`.

::

    client ──HTTPS──> MetricsMiddleware ──> AuthMiddleware ──> router ──> ClusterState ──> Store
                        (count, time)      (bearer token →      │  objects: list/watch, get,
                                            Principal, 401)     │           delete, apply, cordon
                                                                │  cluster: healthz, metrics,
                                                                │           events, tokens
                                                                │  agent:   register, keepalive,
                                                                │           assignments, status,
                                                                │           backups, console push
                                                                └  backups: create, list, restore;
                                                                   console: read a guest's tail
    watch streams:  store.watch ──> _Feed ──> per-revision batches ──> NDJSON lines
                    (+ BOOKMARK every `heartbeat` s of silence, ERROR on Compacted)

Vocabulary: a *principal* is who a token acts as (role + scope: ``admin``, ``join``,
``agent`` for one host, ``app`` for one App); a *view* is an object as the API shows it
(record + merged status, built by :mod:`podium.state`); a *bookmark* is a heartbeat
line carrying the revision a client may resume after.

Every answer that is not a success is ``{"error": "<one line saying what to do>"}``.
"""

from podium.api._app import create_app
from podium.api._auth import Principal, TokenAuthenticator
from podium.api._context import ApiContext, context_of
from podium.api._metrics import Metrics

__all__ = [
    "ApiContext",
    "Metrics",
    "Principal",
    "TokenAuthenticator",
    "context_of",
    "create_app",
]
