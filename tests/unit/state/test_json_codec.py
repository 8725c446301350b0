"""The store's JSON codec (``podium.state._cluster.dumps``/``loads``, orjson).

Its bytes must be the canonical form the stdlib wrote before (sorted keys, compact), so
values written before and after the switch compare equal as bytes; where they differ
(non-ASCII, NaN) the difference is deliberate and pinned here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from podium.state._cluster import dumps, loads


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


GUEST = {  # a Guest record as the app controller writes it, keys deliberately unsorted
    "uid": "4f0c6a52-3b7e-4a8e-9a11-2f1a2b3c4d5e",
    "name": "web-00042",
    "kind": "Guest",
    "owner": "web",
    "created": 1733450012.123456,
    "spec": {
        "request": {"net_mbps": 10, "memory_mib": 512, "iops": 50, "cpu": 1},
        "image": "tiny",
        "app": "web",
        "spread": {"domain": "rack", "max_skew": 1},
        "priority": 0,
        "running": True,
        "nics": [{"network": "default", "mac": None}],
        "disk_gib": 1,
        "workload": "idle",
        "labels": {"tier": "front", "zone": "b"},
        "profile": None,
        "usage": [0.25, 1.5, 0.0, -2.5e-3, 12345.678],
    },
}


def test_canonical_bytes_equal_the_stdlibs_for_a_guest_record() -> None:
    raw = dumps(GUEST)
    assert raw == _stdlib(GUEST)
    assert loads(raw) == GUEST


def test_equal_values_give_equal_bytes_whatever_their_key_order() -> None:
    shuffled = {k: GUEST[k] for k in reversed(list(GUEST))}
    assert dumps(shuffled) == dumps(GUEST)


def test_non_ascii_is_utf8_where_the_stdlib_escaped_but_reads_back_equal() -> None:
    value = {"message": "café ☃ 𝄞", "ünï": ["ß"]}
    raw = dumps(value)
    assert (
        raw == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert loads(raw) == loads(_stdlib(value)) == value  # a value written before reads equal


def test_non_str_keys_are_written_as_strings() -> None:
    assert (
        dumps({2: "a", True: "b", None: "c", 1.5: "d"})
        == b'{"1.5":"d","2":"a","null":"c","true":"b"}'
    )
    assert loads(dumps({7: {"x": 1}})) == {"7": {"x": 1}}


def test_what_orjson_refuses_is_written_as_the_stdlib_wrote_it() -> None:
    big = {"n": 2**70, "s": "é"}
    assert dumps(big) == _stdlib(big)  # ints beyond 64 bits: the stdlib's bytes
    assert dumps({"score": np.float64(0.75)}) == b'{"score":0.75}'  # float subclasses


def test_nan_is_written_as_null_and_old_nan_still_reads() -> None:
    assert dumps({"x": float("nan"), "y": float("inf")}) == b'{"x":null,"y":null}'
    old = loads(b'{"x":NaN,"y":Infinity}')  # as the stdlib wrote them
    assert old["y"] == float("inf") and old["x"] != old["x"]


def test_errors_keep_the_types_callers_catch() -> None:
    for raw in (b"", b"{", b"\xff", b"not json"):
        with pytest.raises(ValueError):
            loads(raw)
    with pytest.raises(json.JSONDecodeError):
        loads(b'{"a":')
    with pytest.raises(TypeError):
        dumps({"a": {1, 2}})
    with pytest.raises(TypeError):
        dumps({"a": object()})
