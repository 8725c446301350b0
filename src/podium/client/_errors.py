"""The client's one exception, and the translation of transport failures into it."""

from __future__ import annotations

import ssl
from typing import Any

import httpx


class ClientError(Exception):
    """A request to the podium server failed; ``str()`` is one line saying what to do.

    ``status`` is the HTTP status the server answered with, or ``None`` when no
    answer came (connection refused, TLS failure, timeout, dropped stream).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """True when retrying the same request later may succeed."""
        return self.status is None or self.status >= 500


def _tls_cause(err: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def transport_error(err: httpx.HTTPError, server: str, config_source: str) -> ClientError:
    """A :class:`ClientError` for a request that got no HTTP answer."""
    tls = _tls_cause(err)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        return ClientError(
            f"TLS handshake with {server} failed ({reason}): the server's certificate is not "
            f"trusted by the CA in {config_source}; check its 'ca' (the server's ca.pem)"
        )
    cause = str(err) or type(err).__name__
    if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout):
        return ClientError(
            f"cannot reach podium server at {server} ({cause}): is it running? check --config"
        )
    if isinstance(err, httpx.TimeoutException):
        return ClientError(
            f"podium server at {server} did not answer in time ({type(err).__name__}): "
            "it may be overloaded or unreachable; try again"
        )
    return ClientError(f"connection to podium server at {server} failed ({cause}); try again")


def error_message(response: httpx.Response) -> str:
    """The server's one-line ``{"error": ...}``, or a short description of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")


def status_error(response: httpx.Response, config_source: str) -> ClientError:
    """A :class:`ClientError` for an HTTP error answer."""
    message = error_message(response)
    if response.status_code == 401:
        message = f"the server rejected the token from {config_source}: {message}"
    return ClientError(message, status=response.status_code)
