"""AsyncPodiumClient: the API as the CLI, the demo and scripts use it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any

import httpx

from podium.client._config import ClientConfig
from podium.client._errors import ClientError
from podium.client._transport import Http
from podium.model import KINDS

RECONNECT_FOR = 30.0  # a watch keeps trying to resume this long before giving up
BACKOFF_MAX = 5.0

JSON = dict[str, Any]
Items = list[JSON]  # (``list`` is a method name in the client)


def _check(line: JSON) -> JSON:
    """Raise the ERROR line of a stream as a (non-retryable) :class:`ClientError`."""
    if line.get("type") == "ERROR":
        raise ClientError(str(line.get("error", "watch failed")), status=410)
    return line


def kind_path(kind: str) -> str:
    """``Guest``/``guest``/``guests`` → ``guests`` (unknown kinds pass through)."""
    found = KINDS.get(kind)
    return f"{found.value.lower()}s" if found else kind


class _Resume:
    """Where a dropped watch resumes: after the last revision seen *completely*.

    Lines of one revision may span several lines; the revision counts as complete
    once a later revision or a BOOKMARK arrives. Until the first BOOKMARK of a
    stream started without ``from``, the initial snapshot is incomplete: resuming
    then starts the snapshot over.
    """

    def __init__(self, from_revision: int) -> None:
        self.snapshot = from_revision <= 0
        self.complete = from_revision - 1
        self.pending = self.complete

    def see(self, line: JSON) -> None:
        revision = line.get("revision")
        if not isinstance(revision, int):
            return
        if line.get("type") == "BOOKMARK":
            self.snapshot = False
            self.complete = self.pending = max(self.pending, revision)
        elif revision > self.pending:
            self.complete, self.pending = self.pending, revision

    @property
    def from_revision(self) -> int:
        return 0 if self.snapshot else self.complete + 1


class AsyncPodiumClient:
    """The podium API over HTTPS. Use as ``async with AsyncPodiumClient(config) as c:``.

    Every method raises :class:`ClientError` (one line saying what to do).
    ``transport`` is for tests (e.g. ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._http = Http(
            config.servers,
            config.token,
            config.ca_pem,
            source=config.source,
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncPodiumClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    # -- objects ---------------------------------------------------------------------

    async def list(self, kind: str) -> tuple[Items, int]:
        """Every object of ``kind`` (views with spec and status) and the revision read at."""
        body = await self._http.request("GET", f"/api/v1/{kind_path(kind)}")
        return body["items"], body["revision"]

    async def get(self, kind: str, name: str) -> JSON:
        body: JSON = await self._http.request("GET", f"/api/v1/{kind_path(kind)}/{name}")
        return body

    async def delete(self, kind: str, name: str) -> JSON:
        """Delete one object; returns ``{"deleted": true, "revision": N}``."""
        body: JSON = await self._http.request("DELETE", f"/api/v1/{kind_path(kind)}/{name}")
        return body

    async def apply(self, documents: Items, source: str = "<api>") -> JSON:
        """Create or update ``documents`` in one transaction (all or nothing).

        Returns ``{"results": [{"kind", "name", "action"}], "revision": N}``.
        """
        payload = {"source": source, "documents": documents}
        body: JSON = await self._http.request("POST", "/api/v1/apply", json_body=payload)
        return body

    def watch(
        self, kind: str, from_revision: int = 0, *, bookmarks: bool = False
    ) -> AsyncGenerator[JSON, None]:
        """Changes to objects of ``kind``: ``{"type": ADDED|MODIFIED|DELETED, "object",
        "revision"}``, from ``from_revision`` (0: every current object as ADDED first).

        A dropped stream is resumed transparently (for up to 30 s of failures);
        BOOKMARK heartbeats are yielded only if ``bookmarks``.
        """
        return self._watch(f"/api/v1/{kind_path(kind)}", from_revision, bookmarks)

    # -- cluster ---------------------------------------------------------------------

    async def events(self, limit: int = 0) -> tuple[Items, int]:
        """The newest ``limit`` events (0: all), oldest first, and the revision read at."""
        body = await self._http.request("GET", "/api/v1/events", params={"limit": limit})
        return body["items"], body["revision"]

    def watch_events(
        self, from_revision: int = 0, *, bookmarks: bool = False
    ) -> AsyncGenerator[JSON, None]:
        """New events as ``{"type": "EVENT", "event": {...}, "revision": N}`` lines."""
        return self._watch("/api/v1/events", from_revision, bookmarks)

    async def cordon(self, name: str, cordoned: bool = True) -> JSON:
        verb = "cordon" if cordoned else "uncordon"
        body: JSON = await self._http.request("POST", f"/api/v1/hosts/{name}/{verb}")
        return body

    async def create_token(self, role: str, ttl: int = 0, app: str | None = None) -> JSON:
        """Mint a token; returns ``{"token", "id", "role"}`` (the secret is shown once)."""
        payload: JSON = {"role": role, "ttl": ttl}
        if app is not None:
            payload["app"] = app
        body: JSON = await self._http.request("POST", "/api/v1/tokens", json_body=payload)
        return body

    async def tokens(self) -> Items:
        """Every token's id, role, scope and expiry (never the secret)."""
        body = await self._http.request("GET", "/api/v1/tokens")
        items: Items = body["items"]
        return items

    async def revoke_token(self, token_id: str) -> None:
        await self._http.request("DELETE", f"/api/v1/tokens/{token_id}")

    async def health(self) -> JSON:
        """``{"ok", "store": {"backend", "revision"}, "leader"}``; ``ok`` false (with
        ``error``) when the server answers but its store does not."""
        body: JSON = await self._http.request("GET", "/healthz", ok=(503,))
        return body

    # -- live migration and drain ---------------------------------------------------------

    async def migrate(self, guest: str, to: str | None = None) -> JSON:
        """Live-migrate a running guest to ``to`` (None: the scheduler picks); returns the
        new migration record (state ``pending``). Poll :meth:`migration` for its progress."""
        body = await self._http.request(
            "POST", f"/api/v1/guests/{guest}/migrate", json_body={"to": to}
        )
        record: JSON = body["migration"]
        return record

    async def migration(self, guest: str) -> JSON:
        """The guest's latest migration record: ``state`` pending, preparing, transferring,
        completed, failed or cancelled; ``progress`` while transferring; ``result`` once done."""
        body: JSON = await self._http.request("GET", f"/api/v1/migrations/{guest}")
        return body

    async def migrations(self) -> Items:
        """Every guest's latest migration record."""
        body = await self._http.request("GET", "/api/v1/migrations")
        items: Items = body["items"]
        return items

    async def drain(self, host: str) -> JSON:
        """Cordon ``host`` and move its guests away; ``{"name", "draining", "guests"}``.
        The host's view shows ``status.draining`` (and ``HostDrained`` is emitted) until
        :meth:`cordon` ``(host, False)`` ends it."""
        body: JSON = await self._http.request("POST", f"/api/v1/hosts/{host}/drain")
        return body

    # -- profiles --------------------------------------------------------------------------

    async def clone_profile(self, name: str, count: int = 1, spread: str | None = None) -> JSON:
        """Clone profile ``name`` (and the guest wearing it) ``count`` times with fresh
        addresses from its pools; ``{"source", "profiles", "guests", "revision"}``."""
        body: JSON = await self._http.request(
            "POST",
            f"/api/v1/profiles/{name}/clone",
            json_body={"count": count, "spread": spread},
        )
        return body

    # -- backups and console -------------------------------------------------------------

    async def create_backup(self, guest: str, mode: str = "auto", target: str = "local") -> JSON:
        """Back up a running guest's volumes (``auto``, ``full`` or ``incremental``) to
        ``target`` (``local`` or ``replica``: the other site's storage); returns the new
        record (state ``pending``). Poll :meth:`backup` for its progress."""
        payload = {"guest": guest, "mode": mode, "target": target}
        body = await self._http.request("POST", "/api/v1/backups", json_body=payload)
        record: JSON = body["backup"]
        return record

    async def backups(self, guest: str | None = None) -> Items:
        """Backup records (of ``guest``, or all), oldest first."""
        params = {"guest": guest} if guest else None
        body = await self._http.request("GET", "/api/v1/backups", params=params)
        items: Items = body["items"]
        return items

    async def backup(self, backup_id: str) -> JSON:
        """One backup record: ``state`` is pending, running, completed or failed."""
        body: JSON = await self._http.request("GET", f"/api/v1/backups/{backup_id}")
        return body

    async def restore_backup(self, backup_id: str, as_name: str | None = None) -> JSON:
        """Create a guest from a completed backup; returns ``{"guest": view}``."""
        body: JSON = await self._http.request(
            "POST", f"/api/v1/backups/{backup_id}/restore", json_body={"as": as_name}
        )
        return body

    async def console(self, guest: str) -> JSON:
        """``{"guest", "host", "text", "updated"}``: the serial console its host captured."""
        body: JSON = await self._http.request("GET", f"/api/v1/guests/{guest}/console")
        return body

    async def traffic(self) -> JSON:
        """The traffic matrix (admin): ``{"pairs": [{"a", "b", "bytes_per_s", "hosts",
        "at"}], "hosts": [{"host", "at", "interval_s", "stale"}]}``, busiest pair first."""
        body: JSON = await self._http.request("GET", "/api/v1/traffic")
        return body

    async def rebalance_plan(self) -> JSON:
        """What one rebalancing pass would do now (admin): ``{"moves": [{"guest", "from",
        "to", "reason", "benefit", "cost"}], "budget", "hot_before", "hot_after", "notes"}``."""
        body: JSON = await self._http.request("GET", "/api/v1/rebalance/plan")
        return body

    async def rebalance(self) -> JSON:
        """Run one rebalancing pass now (admin): the plan plus ``requested`` migration ids
        and ``skipped`` (why some moves were not requested)."""
        body: JSON = await self._http.request("POST", "/api/v1/rebalance")
        return body

    # -- site DR -----------------------------------------------------------------------------

    async def dr_failover(self, from_site: str, to_site: str, dr_map: JSON | None = None) -> JSON:
        """Recover site ``from_site``'s protected guests on ``to_site`` (admin; refused while
        a host of ``from_site`` lives); the report: ``{"operation", "from", "to", "at",
        "guests": [{"guest", "recovered", "reason", "backup", "point", "loss_s", "rpo_s",
        "within_rpo", "networks", "ips", ...}], "recovered", "not_recovered", "already",
        "max_loss_s"}``. ``dr_map``: the parsed map file (networks, ips)."""
        return await self._dr("failover", from_site, to_site, map=dr_map or {})

    async def dr_test(self, from_site: str, to_site: str, dr_map: JSON) -> JSON:
        """A drill: copies of the site's protected guests on ``dr_map["test_networks"]``,
        production untouched; the report (each line's ``copy`` names the drill guest)."""
        return await self._dr("test", from_site, to_site, map=dr_map)

    async def dr_test_cleanup(self, from_site: str, to_site: str) -> JSON:
        """Delete what the drill made: ``{"deleted": ["Guest/x-drtest", ...], "kept"}``."""
        return await self._dr("test/cleanup", from_site, to_site)

    async def dr_failback_sync(self, from_site: str, to_site: str) -> JSON:
        """Failback step 1: ``{"backups": [{"guest", "backup", "state"}], "skipped"}``."""
        return await self._dr("failback/sync", from_site, to_site)

    async def dr_failback_stop(self, from_site: str, to_site: str, backups: Sequence[str]) -> JSON:
        """Failback step 2: stop the guests of these completed final replicas:
        ``{"stopping": [guest], "skipped": [{"guest", "reason"}]}``."""
        return await self._dr("failback/stop", from_site, to_site, backups=list(backups))

    async def dr_failback(
        self, from_site: str, to_site: str, backups: Sequence[str], dr_map: JSON | None = None
    ) -> JSON:
        """Failback step 3, given the (completed) final replicas of step 1, once their
        guests stopped (step 2); the report."""
        return await self._dr(
            "failback", from_site, to_site, map=dr_map or {}, backups=list(backups)
        )

    async def _dr(self, path: str, from_site: str, to_site: str, **extra: Any) -> JSON:
        payload = {"from": from_site, "to": to_site, **extra}
        body: JSON = await self._http.request("POST", f"/api/v1/dr/{path}", json_body=payload)
        return body

    # -- streams ---------------------------------------------------------------------

    async def _watch(
        self, path: str, from_revision: int, bookmarks: bool
    ) -> AsyncGenerator[JSON, None]:
        resume = _Resume(from_revision)
        failing_since: float | None = None
        delay = 0.2
        while True:
            stream = self._http.ndjson(path, {"watch": 1, "from": resume.from_revision})
            try:
                async with contextlib.aclosing(stream):
                    async for line in stream:
                        failing_since, delay = None, 0.2
                        resume.see(_check(line))
                        if line.get("type") != "BOOKMARK" or bookmarks:
                            yield line
            except ClientError as err:
                if not err.retryable:
                    raise
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since > RECONNECT_FOR:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
