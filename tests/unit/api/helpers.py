"""Helpers shared by the API tests: documents and error-body checks."""

from __future__ import annotations

from typing import Any

import httpx


def guest_doc(name: str, cpu: float = 1, **spec: Any) -> dict[str, Any]:
    spec = {"image": "tiny", "request": {"cpu": cpu}, **spec}
    return {"kind": "Guest", "name": name, "spec": spec}


def app_doc(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"kind": "App", "name": name, "spec": {"replicas": replicas, "image": "tiny"}}


def assert_one_line_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The answer has ``status`` and a one-line ``{"error"}`` containing ``fragments``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message
