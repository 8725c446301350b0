"""In-process sim agents against a real server, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from podium.agent import Agent
from podium.client import AgentLink, ClientConfig
from podium.drivers import SimDriver
from podium.model import Resources


@contextlib.asynccontextmanager
async def sim_agents(
    config: ClientConfig,
    join: str,
    count: int,
    capacity: Resources,
    *,
    driver: dict[str, Any],
    agent: dict[str, Any],
) -> AsyncIterator[None]:
    """Run agents ``host-1..host-N`` with sim drivers (``driver``/``agent``: extra kwargs,
    e.g. a traffic or usage model and its report interval); stop them all on exit."""
    links, tasks = [], []
    for i in range(1, count + 1):
        name = f"host-{i}"
        link = AgentLink(config.server, join, config.ca_pem)
        sim = SimDriver(name=name, capacity=capacity, start_delay=(0.05, 0.1), **driver)
        runner = Agent(name, link, sim, capacity=capacity, **agent)
        links.append(link)
        tasks.append(asyncio.create_task(runner.run(), name=f"agent-{name}"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in links:
            await link.close()
