"""The agent's network-rules loop: reconcile on change, repair drift, survive failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from podium.agent._link import LinkError
from podium.agent._routes import NetworkRouter, RuleSource, routes_loop
from podium.drivers.net import NetworkError, RoutedNetwork

FRONT = {"name": "front", "vlan": 100, "subnet": "10.10.0.0/24", "gateway": "10.10.0.1",
         "peers": ["back"]}  # fmt: skip
BACK = {"name": "back", "vlan": 200, "subnet": "10.20.0.0/24", "gateway": "10.20.0.1",
        "peers": ["front"]}  # fmt: skip


class FakeLink:
    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []
        self.fail = False
        self.asked: list[str] = []

    async def networks(self, host: str) -> tuple[list[dict[str, Any]], int]:
        self.asked.append(host)
        if self.fail:
            raise LinkError("server gone")
        return list(self.listed), 7


class FakeRouter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.threads: set[int] = set()
        self.fail = False

    def reconcile(self, networks: Sequence[RoutedNetwork]) -> None:
        self.threads.add(threading.get_ident())
        if self.fail:
            raise NetworkError("nft: no such file")
        self.calls.append(tuple(n.name for n in networks))


async def until(check: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def test_the_fakes_fit_the_protocols() -> None:
    assert isinstance(FakeLink(), RuleSource) and isinstance(FakeRouter(), NetworkRouter)
    assert not isinstance(object(), RuleSource)


async def test_reconciles_changes_off_the_loop_and_survives_failures() -> None:
    link, router = FakeLink(), FakeRouter()
    task = asyncio.create_task(routes_loop("h1", link, router, interval=0.01, refresh=1000))
    try:
        await until(lambda: router.calls == [()])  # the first list: clear leftovers
        await until(lambda: len(link.asked) >= 5)
        assert router.calls == [()]  # unchanged: not again
        assert threading.get_ident() not in router.threads

        link.listed = [FRONT, BACK]
        await until(lambda: router.calls[-1:] == [("front", "back")])

        link.fail = True  # the server is away: logged, retried, nothing undone
        asked = len(link.asked)
        await until(lambda: len(link.asked) >= asked + 3)
        link.fail = False
        router.fail = True
        await until(lambda: len(link.asked) >= asked + 6)
        router.fail = False
        calls = len(router.calls)
        await until(lambda: len(router.calls) == calls + 1)  # after a failure: again
        assert router.calls[-1] == ("front", "back")

        link.listed = []
        await until(lambda: router.calls[-1] == ())
        assert link.asked[0] == "h1" and not task.done()
    finally:
        task.cancel()


async def test_an_unchanged_list_is_reconciled_again_now_and_then() -> None:
    link, router = FakeLink(), FakeRouter()
    link.listed = [FRONT, BACK]
    task = asyncio.create_task(routes_loop("h1", link, router, interval=0.005, refresh=3))
    try:
        await until(lambda: len(router.calls) >= 3)
        assert len(link.asked) >= 7  # one reconcile per 3 listings, not per listing
    finally:
        task.cancel()
