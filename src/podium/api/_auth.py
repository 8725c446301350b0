"""Bearer-token authentication (every path) and role/scope checks (per route).

::

    request ──> AuthMiddleware ──(token → Principal, cached briefly)──> route
                     │ 401 {"error"}                                    │
                     └── missing / unknown / expired token              └─ require_*() → 403

Roles: ``admin`` (everything), ``join`` (register a host, nothing else), ``agent``
(act for its own host only), ``app`` (read its App and its guests, re-apply its App).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.state import ClusterState, hash_token, keys, loads, token_id
from podium.store import StoreError

Clock = Callable[[], float]

CACHE_SIZE = 10_000
ADMIN_HINT = "the admin token is in <data-dir>/admin.conf of 'podium server'"


class HTTPError(Exception):
    """An error the API answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token's role and scope (never its secret)."""

    id: str
    role: str
    host: str | None = None
    app: str | None = None
    expires: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenAuthenticator:
    """Resolves bearer tokens to principals, caching store lookups for ``ttl`` seconds.

    A cached principal is still checked against its expiry on every use; a revoked
    token stops working on this server at once and on others within ``ttl``.
    Unknown tokens are not cached (a token minted on another server works at once).
    """

    def __init__(
        self,
        state: ClusterState,
        *,
        ttl: float = 2.0,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self._state = state
        self._ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Principal]] = {}

    def forget(self, token_hash: str | None = None) -> None:
        """Drop one cached token (by its hash), or all of them."""
        if token_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(token_hash, None)

    async def authenticate(self, token: str) -> Principal:
        """The principal of ``token``. Raises :class:`HTTPError` 401, or ``StoreError``."""
        digest = hash_token(token)
        now = self._monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            kv = await self._state.store.get(keys.token_key(digest))
            if kv is None:
                self._cache.pop(digest, None)
                raise HTTPError(
                    401, f"unknown token {token_id(token)}: use a valid token ({ADMIN_HINT})"
                )
            record = loads(kv.value)
            principal = Principal(
                id=record.get("id", digest[:12]),
                role=record["role"],
                host=record.get("host"),
                app=record.get("app"),
                expires=record.get("expires"),
            )
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal.expires is not None and principal.expires < self._clock():
            raise HTTPError(
                401,
                f"token {principal.id} expired at {time.ctime(principal.expires)}: "
                "ask an admin for a new token",
            )
        return principal


def _error_response(status: int, message: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return {"type": "http.response.start", "status": status, "headers": headers}, body


class AuthMiddleware:
    """ASGI middleware: every HTTP request must carry a valid bearer token.

    On success the :class:`Principal` is at ``request.state.principal``.
    """

    def __init__(self, app: ASGIApp, authenticator: TokenAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        status, message = 0, ""
        token = _bearer(scope)
        if token is None:
            status, message = (
                401,
                f"missing bearer token: send 'Authorization: Bearer <token>' ({ADMIN_HINT})",
            )
        else:
            try:
                principal = await self.authenticator.authenticate(token)
            except HTTPError as err:
                status, message = err.status, err.message
            except StoreError as err:
                status, message = 503, f"cannot check the token: the store did not answer: {err}"
            else:
                scope.setdefault("state", {})["principal"] = principal
        if status:
            start, body = _error_response(status, message)
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


# -- scope checks (called by routes) -----------------------------------------------------


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # only if mounted without AuthMiddleware
        raise HTTPError(401, "request was not authenticated")
    return principal


def _role_hint(principal: Principal) -> str:
    if principal.role == "join":
        return "a join token can only register a host (POST /api/v1/agent/register)"
    if principal.role == "agent":
        return f"an agent token acts only for its host {principal.host!r} via /api/v1/agent/"
    if principal.role == "app":
        return f"an app token acts only on App {principal.app!r} and its guests"
    return f"role {principal.role!r} cannot do this"


def require_admin(principal: Principal, what: str) -> None:
    """Raise 403 unless ``principal`` is an admin."""
    if not principal.is_admin:
        raise HTTPError(403, f"{what} needs an admin token: {_role_hint(principal)}")


def require_host(principal: Principal, host: str) -> None:
    """Raise 403 unless ``principal`` may act for ``host`` (its agent, or an admin)."""
    if principal.is_admin or (principal.role == "agent" and principal.host == host):
        return
    if principal.role == "agent":
        raise HTTPError(
            403, f"this agent token acts only for host {principal.host!r}, not {host!r}"
        )
    raise HTTPError(403, f"acting for host {host!r} needs its agent token: {_role_hint(principal)}")


def require_reader(principal: Principal, what: str) -> None:
    """Raise 403 unless ``principal`` may read objects (admin, or app: filtered)."""
    if principal.role not in ("admin", "app"):
        raise HTTPError(403, f"{what} needs an admin or app token: {_role_hint(principal)}")


def app_may_see(principal: Principal, view: dict[str, Any]) -> bool:
    """Whether ``principal`` may see an object view (admins see everything)."""
    if principal.is_admin:
        return True
    if principal.role != "app":
        return False
    if view.get("kind") == "App":
        return bool(view.get("name") == principal.app)
    if view.get("kind") == "Guest":
        return bool(view.get("owner") == principal.app)
    return False
