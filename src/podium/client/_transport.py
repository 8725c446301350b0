"""HTTP plumbing shared by the client and the agent link: TLS, timeouts, NDJSON, failover.

::

    caller ──> Http.request(method, path) ──> httpx (TLS with the config's CA)
                   │ no answer  ──> ClientError(status=None)   (connect 5 s, read 10 s)
                   └ 4xx / 5xx  ──> ClientError(status=code, the server's one line)
    caller ──> Http.ndjson(path) ──> one dict per line; > 30 s of silence = dropped stream

Several servers of one cluster (one etcd; any of them serves the whole API)::

    servers = (A, B, C), current = A
    connect refused / timed out  (never sent)       ──> try B, then C, in the same call;
                                                        stay on the one that answered
    read timeout, dropped, cancelled (maybe sent)   ──> raise; the NEXT call goes to B
    a stream that fails to connect or drops         ──> raise; the caller resumes on B

A call is never sent twice: only a request that certainly did not leave is retried
on another server. Each switch logs one warning on the ``podium.client`` logger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

import podium
from podium.client._errors import (
    ClientError,
    failure_reason,
    status_error,
    transport_error,
    unreachable_error,
)

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
STREAM_SILENCE = 30.0  # the server sends a BOOKMARK every ~10 s; 30 s of nothing = dead

# The request certainly did not reach the server: safe to send it to another one.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

log = logging.getLogger("podium.client")


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verify the server against ``ca_pem`` (or the system CAs when ``None``)."""
    if ca_pem:
        try:
            return ssl.create_default_context(cadata=ca_pem)
        except ssl.SSLError as err:
            raise ClientError(f"the CA certificate in the config is not valid PEM: {err}") from err
    return ssl.create_default_context()


class Http:
    """An ``httpx.AsyncClient`` bound to a token and one or more servers of one cluster.

    ``servers`` is one base URL or several, tried in order (see the module docstring);
    all are verified against the same ``ca_pem``. :attr:`server` names the server
    calls go to now. Every failure raises :class:`ClientError`.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        token: str,
        ca_pem: str | None,
        *,
        source: str,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = (servers,) if isinstance(servers, str) else tuple(servers)
        if not urls:
            raise ClientError(f"no podium server URL given (check {source})")
        self.servers: tuple[str, ...] = tuple(url.rstrip("/") for url in urls)
        self._current = 0
        self.source = source
        https = any(url.startswith("https") for url in self.servers)
        verify: ssl.SSLContext | bool = tls_context(ca_pem) if https else True
        self._client = httpx.AsyncClient(
            headers={"user-agent": f"podium/{podium.__version__}"},
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            trust_env=False,
        )
        self.set_token(token)

    @property
    def server(self) -> str:
        """The base URL calls go to now."""
        return self.servers[self._current]

    def set_token(self, token: str) -> None:
        self._client.headers["authorization"] = f"Bearer {token}"

    def _leave(self, index: int, why: str) -> None:
        """Move on from server ``index`` (once, however many calls saw it fail)."""
        if len(self.servers) == 1 or index != self._current:
            return
        self._current = (index + 1) % len(self.servers)
        log.warning(
            "podium server %s did not answer (%s); using %s",
            self.servers[index],
            why,
            self.server,
        )

    def _untried(self, tried: set[int]) -> int:
        """The first server from the current one on that this call has not tried yet."""
        count = len(self.servers)
        return next(
            index for step in range(count) if (index := (self._current + step) % count) not in tried
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (),
    ) -> Any:
        """Send one request; return the decoded JSON body.

        A request that could not connect goes to the next server, each tried at most
        once. Raises :class:`ClientError` for no answer (naming every server tried) or
        an error status not in ``ok``; an error status is not retried elsewhere.
        """
        tried: dict[int, httpx.HTTPError] = {}
        while True:
            index = self._untried(set(tried))
            server = self.servers[index]
            started = time.monotonic()
            try:
                response = await self._client.request(
                    method, server + path, json=json_body, params=params
                )
            except NOT_SENT as err:
                tried[index] = err
                self._leave(index, failure_reason(err))
                if len(tried) < len(self.servers):
                    continue
                if len(self.servers) == 1:
                    raise transport_error(err, server, self.source) from err
                failures = [(self.servers[i], e) for i, e in tried.items()]
                raise unreachable_error(failures, self.source) from err
            except httpx.HTTPError as err:
                self._leave(index, failure_reason(err))
                raise transport_error(err, server, self.source) from err
            except asyncio.CancelledError:
                # The caller gave up waiting (the agent's keepalive deadline is shorter
                # than our timeouts): treat it as no answer, or a frozen server would
                # keep every later call too.
                self._leave(index, f"no answer in {time.monotonic() - started:.1f} s")
                raise
            break
        if response.status_code >= 400 and response.status_code not in ok:
            raise status_error(response, self.source)
        try:
            return response.json()
        except ValueError as err:
            raise ClientError(
                f"podium server at {server} sent a body that is not JSON "
                f"({response.status_code}, {response.headers.get('content-type', '?')})",
                status=response.status_code,
            ) from err

    async def ndjson(
        self, path: str, params: dict[str, Any], *, silence: float = STREAM_SILENCE
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Stream an NDJSON response, one dict per line, until the server ends it.

        Raises :class:`ClientError` (``status`` None) if the connection fails or stays
        silent for ``silence`` seconds, or with the status of an error answer. A
        stream that fails to connect or drops moves on to the next server: the
        caller resumes it there.
        """
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=silence)
        index = self._current
        server = self.servers[index]
        try:
            async with self._client.stream(
                "GET", server + path, params=params, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise status_error(resp, self.source)
                async for text in resp.aiter_lines():
                    if text.strip():
                        yield json.loads(text)
        except httpx.ReadTimeout as err:
            self._leave(index, f"stream silent for {silence:g} s")
            raise ClientError(
                f"watch stream from {server} went silent for {silence:g} s; "
                "it was dropped (resume from the last revision)"
            ) from err
        except httpx.HTTPError as err:
            self._leave(index, failure_reason(err))
            raise transport_error(err, server, self.source) from err
        except json.JSONDecodeError as err:
            raise ClientError(f"watch stream from {server} sent a bad line: {err}") from err

    async def close(self) -> None:
        await self._client.aclose()
