"""The client's one exception, and the translation of transport failures into it."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
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
    if isinstance(err, httpx.TimeoutException):
        return None  # a handshake that timed out (SSLWantReadError) says nothing of trust
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tls_reason(tls: ssl.SSLError) -> str:
    return str(getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls)


def transport_error(err: httpx.HTTPError, server: str, config_source: str) -> ClientError:
    """A :class:`ClientError` for a request that got no HTTP answer."""
    tls = _tls_cause(err)
    if tls is not None:
        reason = _tls_reason(tls)
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


def failure_reason(err: httpx.HTTPError) -> str:
    """A few words on why a request got no answer (for logs and lists of servers)."""
    tls = _tls_cause(err)
    if tls is not None:
        return f"TLS handshake failed: {_tls_reason(tls)}"
    if isinstance(err, httpx.TimeoutException):
        return type(err).__name__
    return str(err) or type(err).__name__


def unreachable_error(
    failures: Sequence[tuple[str, httpx.HTTPError]], config_source: str
) -> ClientError:
    """A :class:`ClientError` for a request that no server of the list would take."""
    tried = "; ".join(f"{server}: {failure_reason(err)}" for server, err in failures)
    hint = "are they running? check --config"
    if any(_tls_cause(err) is not None for _, err in failures):
        hint = f"check that the 'ca' in {config_source} is the servers' ca.pem"
    return ClientError(f"cannot reach any podium server ({tried}): {hint}")


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
