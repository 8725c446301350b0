"""HTTP plumbing shared by the client and the agent link: TLS, timeouts, NDJSON.

::

    caller ──> Http.request(method, path) ──> httpx (TLS with the config's CA)
                   │ no answer  ──> ClientError(status=None)   (connect 5 s, read 10 s)
                   └ 4xx / 5xx  ──> ClientError(status=code, the server's one line)
    caller ──> Http.ndjson(path) ──> one dict per line; > 30 s of silence = dropped stream
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator
from typing import Any

import httpx

import podium
from podium.client._errors import ClientError, status_error, transport_error

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
STREAM_SILENCE = 30.0  # the server sends a BOOKMARK every ~10 s; 30 s of nothing = dead


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verify the server against ``ca_pem`` (or the system CAs when ``None``)."""
    if ca_pem:
        try:
            return ssl.create_default_context(cadata=ca_pem)
        except ssl.SSLError as err:
            raise ClientError(f"the CA certificate in the config is not valid PEM: {err}") from err
    return ssl.create_default_context()


class Http:
    """An ``httpx.AsyncClient`` bound to one server and token, raising :class:`ClientError`."""

    def __init__(
        self,
        server: str,
        token: str,
        ca_pem: str | None,
        *,
        source: str,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.source = source
        verify: ssl.SSLContext | bool = tls_context(ca_pem) if server.startswith("https") else True
        self._client = httpx.AsyncClient(
            base_url=self.server,
            headers={"user-agent": f"podium/{podium.__version__}"},
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            trust_env=False,
        )
        self.set_token(token)

    def set_token(self, token: str) -> None:
        self._client.headers["authorization"] = f"Bearer {token}"

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

        Raises :class:`ClientError` for no answer or an error status not in ``ok``.
        """
        try:
            response = await self._client.request(method, path, json=json_body, params=params)
        except httpx.HTTPError as err:
            raise transport_error(err, self.server, self.source) from err
        if response.status_code >= 400 and response.status_code not in ok:
            raise status_error(response, self.source)
        try:
            return response.json()
        except ValueError as err:
            raise ClientError(
                f"podium server at {self.server} sent a body that is not JSON "
                f"({response.status_code}, {response.headers.get('content-type', '?')})",
                status=response.status_code,
            ) from err

    async def ndjson(
        self, path: str, params: dict[str, Any], *, silence: float = STREAM_SILENCE
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Stream an NDJSON response, one dict per line, until the server ends it.

        Raises :class:`ClientError` (``status`` None) if the connection fails or stays
        silent for ``silence`` seconds, or with the status of an error answer.
        """
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=silence)
        try:
            async with self._client.stream("GET", path, params=params, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise status_error(resp, self.source)
                async for text in resp.aiter_lines():
                    if text.strip():
                        yield json.loads(text)
        except httpx.ReadTimeout as err:
            raise ClientError(
                f"watch stream from {self.server} went silent for {silence:g} s; "
                "it was dropped (resume from the last revision)"
            ) from err
        except httpx.HTTPError as err:
            raise transport_error(err, self.server, self.source) from err
        except json.JSONDecodeError as err:
            raise ClientError(f"watch stream from {self.server} sent a bad line: {err}") from err

    async def close(self) -> None:
        await self._client.aclose()
