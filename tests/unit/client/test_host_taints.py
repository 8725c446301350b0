"""Host taints: ``podium agent --taint``, registration through the API, and placement."""

from __future__ import annotations

import asyncio

import pytest
import typer
from fastapi import FastAPI
from rich.console import Console

from podium.agent import Agent, AgentError
from podium.cli._daemons import _parse_taints
from podium.cli._output import render
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from podium.controller._plans import Bind, NoteUnplaced, plan_placement
from podium.controller._snapshot import read_snapshot
from podium.drivers.sim import SimDriver
from podium.model import Kind, Resources, parse_manifest_text
from podium.scheduler import default_scheduler
from podium.state import ClusterState
from tests.support.server import StreamingASGITransport

CAPACITY = Resources(8, 8192, 1000, 1000)
GUESTS = """
kind: Guest
name: plain
spec: {request: {cpu: 1, memory_mib: 256}}
---
kind: Guest
name: untolerated
spec: {request: {cpu: 9, memory_mib: 256}, tolerations: [gpu=h100]}
---
kind: Guest
name: trainer
spec: {request: {cpu: 1, memory_mib: 256}, tolerations: [gpu=a100]}
"""


def test_agent_taint_option_takes_repeats() -> None:
    assert _parse_taints(["gpu=a100", "dedicated=batch", "gpu=a100"]) == {
        "gpu": "a100",
        "dedicated": "batch",
    }
    assert _parse_taints([]) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["gpu"], "bad --taint 'gpu': expected KEY=VALUE"),
        (["gpu="], "bad --taint 'gpu=': expected KEY=VALUE"),
        (["GPU=a100"], "bad --taint 'GPU=a100': expected KEY=VALUE"),
        (["gpu=a 100"], "bad --taint 'gpu=a 100'"),
        (["gpu=a100", "gpu=h100"], "--taint gpu given twice (a100, h100)"),
    ],
)
def test_agent_taint_option_rejects_what_is_not_key_value(
    values: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit):
        _parse_taints(values)
    assert message in capsys.readouterr().err


async def test_the_api_rejects_a_bad_taint_with_the_fix(app: FastAPI, state: ClusterState) -> None:
    link = AgentLink(
        "http://podium",
        await state.create_token("join"),
        None,
        transport=StreamingASGITransport(app),
    )
    try:
        with pytest.raises(AgentError, match=r"taint gpu=A 100 is not valid: use KEY=VALUE"):
            await link.register(
                "h1", CAPACITY.to_dict(), {}, "sim", "0.1.0", taints={"gpu": "A 100"}
            )
    finally:
        await link.close()


async def test_taints_travel_from_the_agent_to_the_scheduler(
    app: FastAPI, state: ClusterState, config: ClientConfig
) -> None:
    join = await state.create_token("join")
    links, tasks = [], []
    small = Resources(2, 4096, 1000, 1000)  # best fit for the trainer, were it not tainted
    for name, capacity, taints in (("gpu-1", small, {"gpu": "a100"}), ("plain-1", CAPACITY, {})):
        link = AgentLink("http://podium", join, None, transport=StreamingASGITransport(app))
        driver = SimDriver(name=name, capacity=capacity)
        agent = Agent(name, link, driver, capacity=capacity, taints=taints)
        links.append(link)
        tasks.append(asyncio.create_task(agent.run(), name=f"agent-{name}"))
    try:
        async with asyncio.timeout(10):
            while True:
                gpu = await state.get_record(Kind.HOST, "gpu-1")
                plain = await state.get_record(Kind.HOST, "plain-1")
                if gpu is not None and plain is not None:
                    break
                await asyncio.sleep(0.02)
        assert gpu["spec"]["taints"] == {"gpu": "a100"}
        assert "taints" not in plain["spec"]
        await state.apply(parse_manifest_text(GUESTS, source="guests.yaml"))
        plan = plan_placement(await read_snapshot(state), default_scheduler())
        assert plan.request.hosts.taint_names == (("gpu", "a100"),)
        binds = {a.guest: a.host for a in plan.actions if isinstance(a, Bind)}
        assert binds == {"plain": "plain-1", "trainer": "gpu-1"}
        reason = "0/2 hosts fit: 1 had taint gpu=a100 not tolerated, 1 lacked cpu"
        assert NoteUnplaced("untolerated", reason) in plan.actions
        # what the controller's applier records is what `podium get guest NAME` prints
        assert await state.note_unplaced("untolerated", reason)
        async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as client:
            view = await client.get("guest", "untolerated")
        out = Console(record=True, width=250)
        render("Guest", [view], "table", out)
        text = out.export_text()
        assert "untolerated  pending" in text and reason in text
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        for link in links:
            await link.close()
