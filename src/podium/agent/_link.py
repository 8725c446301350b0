"""The agent's view of the server: the :class:`ServerLink` protocol and its errors.

``podium.client.AgentLink`` implements it over HTTPS; tests use fakes. The agent never
imports the store or the state layer: everything it learns comes through a link.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class AgentError(Exception):
    """Root of agent errors (``podium.agent``).

    ::

        AgentError
        ├── LinkError      retryable: the server did not answer, or the stream dropped
        └── LeaseExpired   the host lease is gone: fence, then register again
    """

    retryable: bool = False


class LinkError(AgentError):
    """The server could not be reached or answered with a server error; retry later."""

    retryable = True


class LeaseExpired(AgentError):
    """The server no longer knows the host lease (HTTP 410): register again."""


@dataclass(frozen=True, slots=True)
class Registration:
    """What ``register`` returns.

    ``host_token`` is the host's own agent token when the agent registered with a join
    token (persist it; the link uses it from then on), else ``None``. ``lease`` is the
    store lease the host's liveness hangs on; it expires ``ttl`` seconds after the last
    keepalive the server received. Keep it alive every ``keepalive_interval`` seconds.
    """

    host_token: str | None
    lease: int
    ttl: int
    keepalive_interval: float


@dataclass(frozen=True, slots=True)
class FenceReport:
    """Told to the server when registering again after a self-fence (event ``HostFenced``).

    ``seconds_ago`` is measured on the agent's clock, so the server can place the
    fence on its own timeline without trusting the host's wall clock.
    """

    reason: str
    seconds_ago: float
    killed: int

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "seconds_ago": self.seconds_ago, "killed": self.killed}


@runtime_checkable
class ServerLink(Protocol):
    """One agent's connection to the podium server (docs/contracts.md, agent endpoints).

    Every method raises :class:`LinkError` when the server cannot be reached or answers
    with a 5xx (the call may or may not have taken effect; every call is safe to
    repeat). Other failures (401/403/4xx) raise :class:`AgentError` subclasses that
    are not retryable.
    """

    async def ping(self) -> None:
        """Return once a server answers; raise :class:`LinkError` if none does.

        Cheap: the agent calls it before a registration that reports a fence, so the
        fence's age is measured over a connection that already works.
        """
        ...

    async def register(
        self,
        name: str,
        capacity: dict[str, Any],
        labels: dict[str, Any],
        driver: str,
        agent_version: str,
        *,
        fenced: FenceReport | None = None,
        taints: dict[str, str] | None = None,
    ) -> Registration:
        """Join (or re-join) the cluster as host ``name`` with a fresh lease.

        ``fenced``: the host fenced itself since its last registration (why, when).
        ``taints``: ``{key: value}``; only guests tolerating all of them land here.
        If the server returns a host token, the link authenticates with it for every
        later call; persisting it is the agent's job (``on_host_token``).
        """
        ...

    async def keepalive(self, host: str, lease: int) -> int:
        """Renew ``lease`` to its full TTL; return the TTL.

        Raises :class:`LeaseExpired` if the lease is gone (the host must fence and
        register again) and :class:`LinkError` if the server did not answer.
        """
        ...

    async def assignments(self, host: str) -> tuple[list[dict[str, Any]], int]:
        """Every assignment of ``host`` (``{"guest", "uid", "epoch", "spec"}``) and the
        store revision of that list (watch from revision + 1)."""
        ...

    def watch_assignments(self, host: str, from_revision: int) -> AsyncIterator[dict[str, Any]]:
        """Stream changes to ``host``'s assignments from ``from_revision``, one dict per line:

        ``{"type": "PUT", "assignment": {...}, "revision": N}``,
        ``{"type": "DELETE", "guest": name, "revision": N}``,
        ``{"type": "BOOKMARK", "revision": N}`` (no change; progress marker),
        ``{"type": "ERROR", "error": text}`` (history compacted: list again).

        The stream may end at any time (server restart, proxy timeout); the caller
        resumes from the last revision seen + 1. Raises :class:`LinkError` on
        connection failures.
        """
        ...

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        """Report observed guest states, ``[{"guest", "epoch", "state", "message"}]``.

        Returns ``{"accepted": [names], "rejected": [{"guest", "reason"}]}``; a guest is
        rejected when ``host`` no longer holds its binding at that epoch (stop it).
        """
        ...

    async def report_migration(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        """Report one step of a live migration this host takes part in.

        ``report`` is ``{"guest", "id", "role": "source"|"target", "state":
        "ready"|"progress"|"completed"|"failed", "uri"?, "progress"?, "result"?,
        "message"?}`` (``POST /api/v1/agent/{host}/migrations``). Returns ``{"accepted":
        bool, "reason": str}``; not accepted means stale (the migration is over or not
        this host's): the agent drops the report and does not retry it.
        """
        ...

    async def report_backup(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        """Report one step of a backup, ``{"guest", "id", "state": "running"|"completed"|
        "failed", "path"?, "mode"?, "bytes"?, "progress"?: {"done", "total"}, "message"?}``
        (``POST /api/v1/agent/{host}/backups``). Returns ``{"accepted": bool, "reason": str}``
        like :meth:`report_migration`."""
        ...

    async def push_console(self, host: str, guest: str, text: str) -> None:
        """Store the tail (at most 16 KiB) of ``guest``'s serial console
        (``PUT /api/v1/agent/{host}/console/{guest}``); the server accepts it only from
        the guest's host. Best effort: the agent logs failures and pushes again later."""
        ...

    async def report_traffic(self, host: str, report: dict[str, Any]) -> None:
        """Report the traffic between guests measured here over the last interval,
        ``{"interval_s": float, "pairs": [{"a", "b", "bytes_per_s"}]}`` where ``a``/``b``
        is a guest name or a MAC (``POST /api/v1/agent/{host}/traffic``; it replaces
        the host's previous report). Best effort: the agent logs failures."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...
