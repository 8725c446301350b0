"""Clients of the podium API: the CLI's :class:`AsyncPodiumClient`, the agent's link.

::

    podium CLI / demo / scripts ──> AsyncPodiumClient ─┐
                                                       ├─> Http (httpx, TLS with the config's CA,
    podium agent ──> AgentLink (podium.agent.ServerLink)┘    bearer token, NDJSON streams)
                                                                 │
                                                                 v
                                                          podium server API

Vocabulary: a *config* (:class:`ClientConfig`, admin.conf) names the server, its CA and
a token. Errors are :class:`ClientError` (``.status``: the HTTP status, ``None`` when
no answer came); the agent link raises ``podium.agent`` errors instead.
"""

from podium.client._agent_link import AgentLink
from podium.client._client import AsyncPodiumClient
from podium.client._config import ClientConfig
from podium.client._errors import ClientError

__all__ = ["AgentLink", "AsyncPodiumClient", "ClientConfig", "ClientError"]
