"""The etcd adapter's pure parts: protobuf conversion and error mapping."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]
import pytest
from aetcd import rpc

from podium.store import (
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    InvalidRequest,
    KeyValue,
    LeaseNotFound,
    Put,
    StoreError,
    StoreUnavailable,
)
from podium.store.etcd import _compare, _event, _request_op, _span, map_error


class FakeRpcError:
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", LeaseNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given", InvalidRequest),
        (grpc.StatusCode.OUT_OF_RANGE, "mvcc: required revision is a future", InvalidRequest),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", StoreUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", StoreUnavailable),
        (grpc.StatusCode.UNKNOWN, "context deadline exceeded", StoreUnavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", StoreUnavailable),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", StoreError),
    ],
)
def test_error_mapping(code: grpc.StatusCode, details: str, error: type[StoreError]) -> None:
    mapped = map_error(FakeRpcError(code, details), lease=0x2A)
    assert type(mapped) is error
    if isinstance(mapped, LeaseNotFound):
        assert mapped.lease_id == 0x2A


def test_spans() -> None:
    assert _span("k", False) == (b"k", b"")
    assert _span("a/", True) == (b"a/", b"a0")
    assert _span("", True) == (b"\0", b"\0")  # everything


def test_delete_event_is_completed_from_prev_kv() -> None:
    prev = rpc.KeyValue(key=b"k", value=b"v", create_revision=3, mod_revision=5, version=2)
    pb = rpc.Event(type=rpc.Event.DELETE, kv=rpc.KeyValue(key=b"k", mod_revision=9), prev_kv=prev)
    assert _event(pb) == Event(
        EventType.DELETE,
        KeyValue("k", b"", 3, 9, 0, 0),
        KeyValue("k", b"v", 3, 5, 2, 0),
    )


def test_put_event_without_prev() -> None:
    kv = rpc.KeyValue(key=b"k", value=b"v", create_revision=4, mod_revision=4, version=1, lease=7)
    assert _event(rpc.Event(type=rpc.Event.PUT, kv=kv)) == Event(
        EventType.PUT, KeyValue("k", b"v", 4, 4, 1, 7), None
    )


def test_requests() -> None:
    cmp = _compare(Compare("k", "lease", "!=", 7))
    assert (cmp.key, cmp.target, cmp.result, cmp.lease) == (
        b"k",
        rpc.Compare.LEASE,
        rpc.Compare.NOT_EQUAL,
        7,
    )
    assert _compare(Compare("k", "value", "<", b"x")).value == b"x"
    assert _request_op(Put("k", b"v", 3)).request_put.lease == 3
    assert _request_op(Delete("p/", prefix=True)).request_delete_range.range_end == b"p0"
    assert _request_op(Get("p")).request_range.range_end == b""
