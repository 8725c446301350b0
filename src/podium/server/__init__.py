"""The ``podium server`` process: TLS, admin.conf, the API under uvicorn, controllers.

::

    podium server --store URL --listen HOST:PORT --data-dir DIR
        │
        ├─ store: open_store(URL), must answer       (else ServerError, exit 1)
        ├─ DIR/ca.pem ca.key server.pem server.key   (made once, reused; keys 0600)
        ├─ DIR/admin.conf                            (server URL, CA, admin token; 0600)
        ├─ uvicorn serving podium.api.create_app()   (in our event loop, on our socket)
        └─ LeaderLoop: LeaderElection ─elected─> ControllerManager.run(leadership)

Vocabulary: *ready line* — ``podium server listening on URL (store ..., config ...)``,
printed once connections are accepted; tools wait for it.
"""

from podium.server._controllers import ControllerRunner, LeaderLoop
from podium.server._serve import serve
from podium.server._settings import ServerError, ServerSettings, parse_listen

__all__ = [
    "ControllerRunner",
    "LeaderLoop",
    "ServerError",
    "ServerSettings",
    "parse_listen",
    "serve",
]
