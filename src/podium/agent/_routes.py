"""Network rules on this host: follow the routed networks, keep the host's router in step.

::

    every interval: link.networks(host) ── [{name, vlan, subnet, gateway, peers}]
        changed (or every ``refresh`` intervals, to repair drift; or after a failure)
        ──> asyncio.to_thread(router.reconcile, networks)      (drivers.net.Router)

Runs only where the agent has a router (``podium agent --router-netns``) and its link
can list the networks (:class:`RuleSource`). A failed fetch or reconcile is logged (once
per distinct error) and tried again at the next interval; it never ends the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, runtime_checkable

from podium.agent._link import AgentError
from podium.drivers.net import NetworkError, RoutedNetwork

log = logging.getLogger("podium.agent.routes")

REFRESH = 12  # intervals between reconciles of an unchanged list (drift repair)


@runtime_checkable
class RuleSource(Protocol):
    """A link that can list the networks hosts route (``GET /agent/{host}/networks``)."""

    async def networks(self, host: str) -> tuple[list[dict[str, Any]], int]:
        """The routed networks and the revision they were read at; raises ``AgentError``."""
        ...


@runtime_checkable
class NetworkRouter(Protocol):
    """What keeps a host's routing in step (:class:`podium.drivers.net.Router`)."""

    def reconcile(self, networks: Sequence[RoutedNetwork]) -> None:
        """Route exactly ``networks``; idempotent; blocking (run it in a thread). Raises
        ``NetworkError``, leaving what it did so far for the next call to finish."""
        ...


async def routes_loop(
    host: str,
    link: RuleSource,
    router: NetworkRouter,
    *,
    interval: float,
    refresh: int = REFRESH,
) -> NoReturn:
    """Keep ``router`` routing what the server lists for ``host``, forever (see module)."""
    done: tuple[RoutedNetwork, ...] | None = None  # what the router was last made to route
    since = 0
    last_error = ""
    while True:
        try:
            listed, _ = await link.networks(host)
            wanted = tuple(RoutedNetwork.of(n) for n in listed)
            since += 1
            if wanted != done or since >= refresh:
                await asyncio.to_thread(router.reconcile, wanted)
                if wanted != done:
                    names = ", ".join(f"{n.name}->{'/'.join(n.peers)}" for n in wanted)
                    log.info("host %s routes: %s", host, names or "nothing")
                done, since, last_error = wanted, 0, ""
        except (AgentError, NetworkError) as err:
            done = None  # unknown now: reconcile at the next chance
            if str(err) != last_error:
                log.warning("host %s: network rules not applied: %s", host, err)
                last_error = str(err)
        await asyncio.sleep(interval)
