"""The public surfaces of podium.api, podium.client and podium.server are what we mean."""

from __future__ import annotations

import podium.api
import podium.client
import podium.server


def test_api_exports() -> None:
    assert sorted(podium.api.__all__) == [
        "ApiContext",
        "Metrics",
        "Principal",
        "TokenAuthenticator",
        "context_of",
        "create_app",
    ]


def test_client_exports() -> None:
    assert sorted(podium.client.__all__) == [
        "AgentLink",
        "AsyncPodiumClient",
        "ClientConfig",
        "ClientError",
    ]


def test_server_exports() -> None:
    assert sorted(podium.server.__all__) == [
        "ControllerRunner",
        "LeaderLoop",
        "NetnsListen",
        "ServerError",
        "ServerSettings",
        "parse_guest_network",
        "parse_listen",
        "parse_netns_listen",
        "serve",
    ]


def test_exports_resolve() -> None:
    for module in (podium.api, podium.client, podium.server):
        for name in module.__all__:
            assert getattr(module, name) is not None
