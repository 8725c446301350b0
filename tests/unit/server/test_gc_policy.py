"""The server's garbage-collection policy: freeze survivors, thaw for a complete pass."""

from __future__ import annotations

import gc

from podium.server._gc import FreezeSurvivors


class _FakeGC:
    def __init__(self) -> None:
        self.frozen = 0
        self.heap = 0  # objects outside the permanent generation
        self.now = 0.0
        self.log: list[str] = []

    def freeze(self) -> None:
        self.frozen += self.heap
        self.heap = 0
        self.log.append("freeze")

    def unfreeze(self) -> None:
        self.heap += self.frozen
        self.frozen = 0
        self.log.append("unfreeze")

    def policy(self) -> FreezeSurvivors:
        return FreezeSurvivors(
            max_age=600.0, clock=lambda: self.now, freeze=self.freeze, unfreeze=self.unfreeze
        )


def test_survivors_of_full_collections_are_frozen_and_young_ones_are_left() -> None:
    fake = _FakeGC()
    policy = fake.policy()
    fake.heap = 50
    policy("stop", {"generation": 0, "collected": 0})
    policy("stop", {"generation": 1, "collected": 0})
    policy("start", {"generation": 2})
    assert fake.log == []
    policy("stop", {"generation": 2, "collected": 0})
    assert fake.log == ["freeze"] and fake.frozen == 50


def test_every_max_age_one_full_collection_walks_the_whole_heap() -> None:
    fake = _FakeGC()
    policy = fake.policy()
    for _ in range(3):
        fake.heap = 100
        fake.now += 100
        policy("stop", {"generation": 2})
    assert fake.log == ["freeze"] * 3 and fake.frozen == 300
    fake.now = 601.0
    policy("stop", {"generation": 2})  # due: thaw, so the next pass sees all 300
    assert fake.log[-1] == "unfreeze" and fake.heap == 300 and fake.frozen == 0
    policy("stop", {"generation": 2})  # that complete pass: freeze again, a new period
    assert fake.log[-1] == "freeze" and policy.complete_passes == 1
    fake.now = 1000.0
    policy("stop", {"generation": 2})
    assert fake.log[-1] == "freeze"  # 399 s since the complete pass: not yet due


def test_installed_on_the_real_collector_it_freezes_after_a_full_collection() -> None:
    policy = FreezeSurvivors()
    before = gc.get_freeze_count()
    gc.callbacks.append(policy)
    try:
        keep = [[i] for i in range(1000)]
        gc.collect()
        assert gc.get_freeze_count() >= before + len(keep)
    finally:
        gc.callbacks.remove(policy)
        gc.unfreeze()
