"""A profile's QoS class: its wearer gets the class's reservations, limits and shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from podium.model import Kind, limits_of, shares_of, validate_document
from podium.state import ClusterState, Conflict, assignment_spec
from podium.store.memory import MemoryStore

GOLD = {"cpu": {"reservation": 2, "limit": 4, "shares": 400}, "iops": {"limit": 500}}


def doc(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return validate_document({"kind": kind, "name": name, "spec": spec})


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store, clock=lambda: 1000.0)
    await store.close()


async def test_the_wearer_gets_the_class_unless_it_declares_its_own(state: ClusterState) -> None:
    await state.apply([
        doc("Profile", "gold", {"qos": GOLD}),
        doc("Profile", "plain", {}),
        doc("Guest", "a", {"profile": "gold", "request": {"cpu": 1, "memory_mib": 256}}),
        doc("Guest", "b", {"profile": "plain", "request": {"cpu": 1}}),
    ])  # fmt: skip
    a = await state.get_record(Kind.GUEST, "a")
    assert a is not None
    assert a["spec"]["request"]["cpu"] == 2 and a["spec"]["request"]["memory_mib"] == 256
    assert limits_of(a["spec"]) == {"cpu": 4.0, "iops": 500.0}
    assert shares_of(a["spec"])["cpu"] == 400
    assert limits_of(assignment_spec(a)) == {"cpu": 4.0, "iops": 500.0}  # the host enforces it
    b = await state.get_record(Kind.GUEST, "b")
    assert b is not None and "qos" not in b["spec"] and b["spec"]["request"]["cpu"] == 1
    own = {"profile": "gold", "request": {"cpu": 1}, "qos": {"cpu": {"limit": 1}}}
    await state.apply(
        [doc("Profile", "gold-2", {"qos": GOLD}), doc("Guest", "c", {**own, "profile": "gold-2"})]
    )
    c = await state.get_record(Kind.GUEST, "c")
    assert c is not None and limits_of(c["spec"]) == {"cpu": 1.0}  # its own qos wins


async def test_a_class_whose_limit_is_below_the_request_is_refused(state: ClusterState) -> None:
    await state.apply([doc("Profile", "tiny", {"qos": {"memory_mib": {"limit": 128}}})])
    with pytest.raises(Conflict, match=r"cannot wear Profile 'tiny'.*limit 128 is below"):
        await state.apply(
            [doc("Guest", "big", {"profile": "tiny", "request": {"memory_mib": 512}})]
        )


async def test_a_reapply_keeps_the_class_and_is_unchanged(state: ClusterState) -> None:
    docs = [
        doc("Profile", "gold", {"qos": GOLD}),
        doc("Guest", "a", {"profile": "gold", "request": {"cpu": 1}}),
    ]
    await state.apply(docs)
    first = await state.get_record(Kind.GUEST, "a")
    again = await state.apply(docs)
    assert {a for _, _, a in again.actions} == {"unchanged"}
    assert await state.get_record(Kind.GUEST, "a") == first
    bigger = doc("Guest", "a", {"profile": "gold", "request": {"cpu": 1, "memory_mib": 512}})
    await state.apply([bigger])  # a change of the guest's own spec keeps its class
    a = await state.get_record(Kind.GUEST, "a")
    assert a is not None and a["spec"]["request"]["memory_mib"] == 512
    assert limits_of(a["spec"]) == {"cpu": 4.0, "iops": 500.0}
