"""AgentLink: :class:`podium.agent.ServerLink` over HTTPS.

::

    Agent ──> AgentLink ──> /api/v1/agent/register | /{host}/keepalive | /{host}/assignments
                                                   | /{host}/status | /{host}/backups
                                                   | /{host}/migrations
                                                   | /{host}/console/{guest}
                                                   | /{host}/traffic
                                                   | /{host}/networks (network rules)
    errors:  no answer, 5xx, 409 (host still alive) ──> LinkError     (retry later)
             410 (lease gone)                        ──> LeaseExpired  (fence, register again)
             401, 403, other 4xx                     ──> AgentError    (not retryable)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from podium.agent import AgentError, FenceReport, LeaseExpired, LinkError, Registration
from podium.client._errors import ClientError
from podium.client._transport import Http

JSON = dict[str, Any]


def _agent_error(err: ClientError) -> AgentError:
    if err.status == 410:
        return LeaseExpired(str(err))
    if err.status is None or err.status >= 500 or err.status == 409:
        return LinkError(str(err))
    return AgentError(str(err))


class AgentLink:
    """One agent's link to the server: register, keep the lease, follow assignments.

    Starts with ``token`` (a join token, or the host's agent token); after a
    registration that returns a host token, uses that one for every later call.
    ``server_url`` may list several servers of one cluster: the link fails over
    between them (see :class:`podium.client._transport.Http`), so a dead server
    does not cost the host its lease while another one answers.
    """

    def __init__(
        self,
        server_url: str | Sequence[str],
        token: str,
        ca_pem: str | None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = token
        self._http = Http(
            server_url,
            token,
            ca_pem,
            source="the agent's --token-file",
            timeout=timeout,
            transport=transport,
        )
        self._closed = False

    @property
    def token(self) -> str:
        """The token the link sends now."""
        return self._token

    async def _call(
        self, method: str, path: str, body: Any = None, params: JSON | None = None
    ) -> Any:
        if self._closed:
            raise LinkError("the link is closed")
        try:
            return await self._http.request(method, path, json_body=body, params=params)
        except ClientError as err:
            raise _agent_error(err) from err

    async def ping(self) -> None:
        await self._call("GET", "/healthz")

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
        body = {
            "name": name,
            "capacity": capacity,
            "labels": labels,
            "driver": driver,
            "agent_version": agent_version,
        }
        if fenced is not None:
            body["fenced"] = fenced.to_dict()
        if taints:
            body["taints"] = taints
        answer = await self._call("POST", "/api/v1/agent/register", body)
        registration = Registration(
            host_token=answer.get("host_token"),
            lease=int(answer["lease"]),
            ttl=int(answer["ttl"]),
            keepalive_interval=float(answer["keepalive_interval"]),
        )
        if registration.host_token:
            self._token = registration.host_token
            self._http.set_token(registration.host_token)
        return registration

    async def keepalive(self, host: str, lease: int) -> int:
        answer = await self._call("POST", f"/api/v1/agent/{host}/keepalive", {"lease": lease})
        return int(answer["ttl"])

    async def assignments(self, host: str) -> tuple[list[JSON], int]:
        answer = await self._call("GET", f"/api/v1/agent/{host}/assignments")
        return list(answer["items"]), int(answer["revision"])

    async def watch_assignments(self, host: str, from_revision: int) -> AsyncGenerator[JSON, None]:
        """Lines of the assignment stream, BOOKMARK and ERROR lines included.

        Ends when the server ends the stream; raises :class:`LinkError` when the
        connection fails or stays silent for 30 s.
        """
        if self._closed:
            raise LinkError("the link is closed")
        stream = self._http.ndjson(
            f"/api/v1/agent/{host}/assignments", {"watch": 1, "from": from_revision}
        )
        try:
            async with contextlib.aclosing(stream):
                async for line in stream:
                    yield line
        except ClientError as err:
            raise _agent_error(err) from err

    async def report(self, host: str, reports: list[JSON]) -> JSON:
        answer: JSON = await self._call(
            "POST", f"/api/v1/agent/{host}/status", {"reports": reports}
        )
        return answer

    async def report_migration(self, host: str, report: JSON) -> JSON:
        answer: JSON = await self._call("POST", f"/api/v1/agent/{host}/migrations", report)
        return answer

    async def report_backup(self, host: str, report: JSON) -> JSON:
        answer: JSON = await self._call("POST", f"/api/v1/agent/{host}/backups", report)
        return answer

    async def push_console(self, host: str, guest: str, text: str) -> None:
        await self._call("PUT", f"/api/v1/agent/{host}/console/{guest}", {"text": text})

    async def report_traffic(self, host: str, report: JSON) -> None:
        await self._call("POST", f"/api/v1/agent/{host}/traffic", report)

    async def networks(self, host: str) -> tuple[list[JSON], int]:
        """The networks hosts route between (network rules), and the revision read at."""
        answer = await self._call("GET", f"/api/v1/agent/{host}/networks")
        return list(answer["networks"]), int(answer["revision"])

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._http.close()
