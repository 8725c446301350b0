"""The ``podium server`` process: TLS, admin.conf, the API under uvicorn, controllers.

::

    podium server --store URL --listen HOST:PORT --data-dir DIR
        │
        ├─ store: open_store(URL), must answer       (else ServerError, exit 1)
        ├─ DIR/ca.pem ca.key server.pem server.key   (made once, reused; keys 0600)
        ├─ DIR/admin.conf                            (server URL, CA, admin token; 0600)
        ├─ uvicorn serving podium.api.create_app()   (in our event loop, on our socket,
        │                                             + --listen-netns NETNS@HOST:PORT ones)
        └─ LeaderLoop: LeaderElection ─elected─> ControllerManager.run(leadership)

Vocabulary: *ready line* — ``podium server listening on URL (store ..., config ...)``,
printed once connections are accepted; tools wait for it.
"""

from podium.server._controllers import ControllerRunner, LeaderLoop
from podium.server._serve import serve
from podium.server._settings import (
    NetnsListen,
    ServerError,
    ServerSettings,
    parse_guest_network,
    parse_listen,
    parse_netns_listen,
)

__all__ = [
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
