"""etcd backend: the store protocol over a real etcd v3 cluster, a thin adapter.

::

    EtcdStore ──> endpoint i (sticky) ──gRPC (grpc.aio, aetcd's generated stubs)──> etcd
        │  connect fails / no leader: try the next endpoint, until ``timeout``
        └─ watch: one gRPC stream per watch; on a broken stream resume at last + 1

Why aetcd: measured on these machines (docs PLATFORM.md) it is the fastest Python
client — ~950 sequential puts/s, ~4,200/s concurrent, ~2 ms put-to-watch — against
etcd3gw's ~400-500/s and 3.5 ms over the JSON gateway; ``etcd3`` no longer imports with
current protobuf. We call aetcd's generated stubs (``aetcd.rpc``) rather than its
``Client``: the client lacks range limits, lease compares and per-op transaction
results, and multiplexes every watch on one stream whose errors it cannot attribute;
the stubs are etcd's API one to one.

Failover: an operation runs on the current endpoint; if that endpoint cannot be reached
(connect refused, no leader) the next one is tried, until ``timeout`` seconds have
passed, then :class:`StoreUnavailable` names every endpoint. A read that fails in flight
is retried the same way; a write that fails in flight is not, because it may have been
applied (the protocol leaves that to the caller's compares).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import grpc  # aetcd's dependency; untyped (mypy override in pyproject.toml)
from aetcd import rpc

from podium.store._protocol import (
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    Op,
    OpResult,
    Put,
    RangeResult,
    StoreStatus,
    TxnResult,
)
from podium.store._txn import check_txn, check_txn_ops, prefix_end_bytes
from podium.store.errors import (
    Compacted,
    InvalidRequest,
    InvalidStoreURL,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)

T = TypeVar("T")

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
# Without "hasleader" a member cut off from its cluster keeps a watch open and silent,
# and parks requests until its own 7 s timeout; with it, it refuses them at once.
_METADATA = (("hasleader", "true"),)
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),  # big ranges and txns
    # Retry a dead endpoint within a second once it is back (gRPC's default backoff
    # grows to two minutes, leaving a restarted single member unused).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),  # notice a dead peer under an idle watch
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
_TARGETS = {
    "version": rpc.Compare.VERSION,
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
    "value": rpc.Compare.VALUE,
    "lease": rpc.Compare.LEASE,
}
_FIELDS = {
    "version": "version",
    "create": "create_revision",
    "mod": "mod_revision",
    "value": "value",
    "lease": "lease",
}
_RESULTS = {
    "=": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}


# -- conversions (typed wrappers around untyped protobuf messages) ----------------------


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _str(key: bytes) -> str:
    return bytes(key).decode("utf-8", "surrogateescape")


def _span(key: str, prefix: bool) -> tuple[bytes, bytes]:
    """etcd's (key, range_end) for one key or a prefix; ``b"\\0"`` ends at infinity."""
    k = _key(key)
    if not prefix:
        return k, b""
    if not k:
        return b"\0", b"\0"
    return k, prefix_end_bytes(k) or b"\0"


def _kv(pb: Any) -> KeyValue:
    return KeyValue(
        _str(pb.key),
        bytes(pb.value),
        int(pb.create_revision),
        int(pb.mod_revision),
        int(pb.version),
        int(pb.lease),
    )


def _event(pb: Any) -> Event:
    prev = _kv(pb.prev_kv) if pb.HasField("prev_kv") else None
    if pb.type == rpc.Event.DELETE:
        # etcd sends only the key and revision of a delete; fill in the rest as the
        # protocol describes a tombstone (from prev_kv, which we always ask for).
        create = prev.create_revision if prev else 0
        kv = KeyValue(_str(pb.kv.key), b"", create, int(pb.kv.mod_revision), 0, 0)
        return Event(EventType.DELETE, kv, prev)
    return Event(EventType.PUT, _kv(pb.kv), prev)


def _compare(cmp: Compare) -> Any:
    msg = rpc.Compare(key=_key(cmp.key), target=_TARGETS[cmp.target], result=_RESULTS[cmp.op])
    setattr(msg, _FIELDS[cmp.target], cmp.value)
    return msg


def _request_op(op: Op) -> Any:
    key, end = _span(op.key, isinstance(op, Delete | Get) and op.prefix)
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=end))


def _op_result(pb: Any) -> OpResult:
    kind = pb.WhichOneof("response")
    if kind == "response_range":
        return OpResult(kvs=tuple(_kv(kv) for kv in pb.response_range.kvs))
    if kind == "response_delete_range":
        return OpResult(deleted=int(pb.response_delete_range.deleted))
    return OpResult()


# -- errors ---------------------------------------------------------------------------


def _never_sent(err: Any) -> bool:
    """True when etcd cannot have applied the request: it never got it, or refused it."""
    details = str(err.details() or "")
    return err.code() == rpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "no leader" in details
    )


def _transient(err: Any) -> bool:
    """True for errors another endpoint (or a retry) may not have."""
    code = err.code()
    return code in (
        rpc.StatusCode.UNAVAILABLE,
        rpc.StatusCode.DEADLINE_EXCEEDED,
        rpc.StatusCode.CANCELLED,
    ) or (
        # a member without quorum times out a linearizable read with a plain Go error
        code == rpc.StatusCode.UNKNOWN and "deadline exceeded" in str(err.details())
    )


def map_error(err: Any, *, lease: int = 0) -> StoreError:
    """Our error for an etcd gRPC error (``lease``: the lease a write used, if any)."""
    code, details = err.code(), str(err.details() or "")
    if code == rpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(lease)
    if code in (rpc.StatusCode.INVALID_ARGUMENT, rpc.StatusCode.OUT_OF_RANGE):
        return InvalidRequest(f"etcd refused the request: {details}")
    if _transient(err) or code == rpc.StatusCode.RESOURCE_EXHAUSTED:
        return StoreUnavailable(f"etcd did not answer ({code.name}: {details})")
    return StoreError(f"etcd error {code.name}: {details}")


class _Progress(Exception):
    """A watch stream ended; resume from ``next_rev``."""

    def __init__(self, next_rev: int) -> None:
        super().__init__(next_rev)
        self.next_rev = next_rev


# -- the store ------------------------------------------------------------------------


class _Endpoint:
    """One etcd member: its lazily created channel and stubs."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: Any = None
        self.kv: Any = None
        self.lease: Any = None
        self.watch: Any = None

    def channel(self) -> Any:
        if self._channel is None:
            self._channel = rpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
            self.kv = rpc.KVStub(self._channel)
            self.lease = rpc.LeaseStub(self._channel)
            self.watch = rpc.WatchStub(self._channel)
        return self._channel

    async def connected(self, timeout: float) -> bool:
        """Connect (if needed) within ``timeout``; False at once when it was refused."""
        channel = self.channel()
        ready, failed = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE
        state = channel.get_state(try_to_connect=True)
        if state == ready:  # the common case: no timer needed
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while state not in (ready, failed, grpc.ChannelConnectivity.SHUTDOWN):
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        return bool(state == ready)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class EtcdStore:
    """The store contract on etcd v3. See :class:`podium.store.Store`.

    ``endpoints`` are ``host:port`` strings tried in order; ``timeout`` bounds each
    operation (failover included) and each reconnection of a watch.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise InvalidStoreURL("an etcd store needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self._members = [_Endpoint(e) for e in self.endpoints]
        self._current = 0
        self._timeout = timeout
        self._connect_timeout = min(2.0, timeout)
        self._watches: set[Any] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> EtcdStore:
        """``etcd://host[:port][,host[:port]...][?timeout=SECONDS]`` (port 2379 by default)."""
        parts = urlsplit(url)
        if parts.scheme != "etcd":
            raise InvalidStoreURL(f"not an etcd URL: {url!r}")
        if "@" in parts.netloc or parts.path.strip("/") or parts.fragment:
            raise InvalidStoreURL(
                f"etcd URL {url!r}: expected etcd://host:port[,host:port...] "
                "(no credentials or path)"
            )
        endpoints = []
        for item in filter(None, (e.strip() for e in parts.netloc.split(","))):
            host, sep, port = item.rpartition(":")
            if not sep or host.endswith(":") or (host.startswith("[") != host.endswith("]")):
                host, port = item, str(DEFAULT_PORT)  # no port (or a bare IPv6 address)
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidStoreURL(f"etcd URL {url!r}: bad endpoint {item!r}")
            endpoints.append(f"{host}:{port}")
        if not endpoints:
            raise InvalidStoreURL(f"etcd URL {url!r} names no endpoint, e.g. etcd://host:2379")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"timeout"})
        if unknown:
            raise InvalidStoreURL(f"etcd URL {url!r}: unknown options {unknown} (?timeout=S)")
        timeout = DEFAULT_TIMEOUT
        if "timeout" in query:
            try:
                timeout = float(query["timeout"][-1])
            except ValueError:
                timeout = 0
            if not timeout > 0:
                raise InvalidStoreURL(f"etcd URL {url!r}: timeout must be positive seconds")
        return cls(endpoints, timeout=timeout)

    # -- plumbing ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _unavailable(self, why: dict[str, str]) -> StoreUnavailable:
        tried = "; ".join(f"{e}: {w}" for e, w in why.items()) or "no attempt finished in time"
        return StoreUnavailable(
            f"no etcd endpoint answered within {self._timeout:g}s "
            f"({', '.join(self.endpoints)}: {tried}); is etcd running? check --store"
        )

    async def _connect(self, deadline: float, why: dict[str, str]) -> _Endpoint:
        """A connected endpoint, starting from the current one; StoreUnavailable at the
        deadline. Endpoints are tried round-robin, pausing briefly after each full round."""
        loop = asyncio.get_running_loop()
        while True:
            for _ in self._members:
                member = self._members[self._current]
                left = deadline - loop.time()
                if left <= 0:
                    raise self._unavailable(why)
                if await member.connected(min(left, self._connect_timeout)):
                    return member
                why[member.target] = "cannot connect"
                self._current = (self._current + 1) % len(self._members)
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    async def _call(
        self, fn: Callable[[_Endpoint, float], Awaitable[T]], *, idempotent: bool, lease: int = 0
    ) -> T:
        """Run ``fn(endpoint, seconds_left)`` with failover (see the module docstring)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        why: dict[str, str] = {}
        while True:
            member = await self._connect(deadline, why)
            try:
                return await fn(member, max(0.001, deadline - loop.time()))
            except rpc.AioRpcError as err:
                if not _transient(err):
                    raise map_error(err, lease=lease) from err
                why[member.target] = f"{err.code().name} {err.details()}"
                if not (idempotent or _never_sent(err)):
                    raise StoreUnavailable(
                        f"etcd at {member.target} did not confirm the write ({err.code().name}: "
                        f"{err.details()}); it may or may not have been applied"
                    ) from err
                if member is self._members[self._current]:
                    self._current = (self._current + 1) % len(self._members)
                if loop.time() >= deadline:
                    raise self._unavailable(why) from err

    async def _range(self, request: Any) -> Any:
        async def run(m: _Endpoint, left: float) -> Any:
            return await m.kv.Range(request, timeout=left, metadata=_METADATA)

        return await self._call(run, idempotent=True)

    # -- Store protocol ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        if not key:
            raise InvalidRequest("empty key")
        resp = await self._range(rpc.RangeRequest(key=_key(key)))
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        if limit < 0:
            raise InvalidRequest(f"limit must be >= 0, got {limit}")
        key, end = _span(prefix, True)
        resp = await self._range(rpc.RangeRequest(key=key, range_end=end, limit=limit))
        return RangeResult(tuple(_kv(kv) for kv in resp.kvs), int(resp.header.revision))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        check_txn_ops([Put(key, value, lease)])
        request = rpc.PutRequest(key=_key(key), value=value, lease=lease)

        async def run(m: _Endpoint, left: float) -> int:
            resp = await m.kv.Put(request, timeout=left, metadata=_METADATA)
            return int(resp.header.revision)

        return await self._call(run, idempotent=False, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        check_txn_ops([Delete(key, prefix)])
        k, end = _span(key, prefix)
        request = rpc.DeleteRangeRequest(key=k, range_end=end)

        async def run(m: _Endpoint, left: float) -> tuple[int, int]:
            resp = await m.kv.DeleteRange(request, timeout=left, metadata=_METADATA)
            return int(resp.header.revision), int(resp.deleted)

        return await self._call(run, idempotent=False)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        check_txn(compares, success, failure)
        request = rpc.TxnRequest(
            compare=[_compare(c) for c in compares],
            success=[_request_op(op) for op in success],
            failure=[_request_op(op) for op in failure],
        )
        # etcd does not say which lease was missing; name the first one the txn uses
        lease = next(
            (op.lease for op in (*success, *failure) if isinstance(op, Put) and op.lease), 0
        )
        writes = any(not isinstance(op, Get) for op in (*success, *failure))

        async def run(m: _Endpoint, left: float) -> TxnResult:
            resp = await m.kv.Txn(request, timeout=left, metadata=_METADATA)
            results = tuple(_op_result(r) for r in resp.responses)
            return TxnResult(bool(resp.succeeded), int(resp.header.revision), results)

        return await self._call(run, idempotent=not writes, lease=lease)

    async def grant(self, ttl: int) -> Lease:
        if ttl < 1:
            raise InvalidRequest(f"lease TTL must be at least 1 second, got {ttl}")

        async def run(m: _Endpoint, left: float) -> Lease:
            resp = await m.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=left, metadata=_METADATA
            )
            if resp.error:
                raise StoreError(f"etcd refused the lease: {resp.error}")
            return Lease(int(resp.ID), int(resp.TTL))

        # a retried grant can only leak a lease that expires by itself
        return await self._call(run, idempotent=True)

    async def keepalive(self, lease_id: int) -> int:
        async def run(m: _Endpoint, left: float) -> int:
            call = m.lease.LeaseKeepAlive(timeout=left, metadata=_METADATA)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            finally:
                call.cancel()
            if resp is grpc.aio.EOF or resp.TTL <= 0:
                raise LeaseNotFound(lease_id)
            return int(resp.TTL)

        return await self._call(run, idempotent=True, lease=lease_id)

    async def revoke(self, lease_id: int) -> None:
        async def run(m: _Endpoint, left: float) -> None:
            await m.lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=left, metadata=_METADATA
            )

        with contextlib.suppress(LeaseNotFound):  # idempotent
            await self._call(run, idempotent=True, lease=lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        async def run(m: _Endpoint, left: float) -> int:
            resp = await m.lease.LeaseTimeToLive(
                rpc.LeaseTimeToLiveRequest(ID=lease_id), timeout=left, metadata=_METADATA
            )
            return int(resp.TTL)

        # etcd: -1 for an unknown lease; whole seconds left, rounded down, otherwise
        return max(-1, await self._call(run, idempotent=True))

    async def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        if start_revision < 0:
            raise InvalidRequest(f"start_revision must be >= 0, got {start_revision}")
        self._check_open()
        key, end = _span(prefix, True)
        next_rev = start_revision
        loop = asyncio.get_running_loop()
        broken_since: float | None = None  # when the stream last went from healthy to broken
        while not self._closed:
            if broken_since is not None:
                if loop.time() - broken_since > self._timeout:
                    raise StoreUnavailable(
                        f"the watch on {prefix!r} kept breaking for {self._timeout:g}s "
                        f"({', '.join(self.endpoints)}); resume it from revision {next_rev}"
                    )
                await asyncio.sleep(0.05)  # a flapping member must not make us spin
            why: dict[str, str] = {}
            deadline = loop.time() + self._timeout
            call, next_rev = await self._open_watch(key, end, next_rev, deadline, why)
            opened = loop.time()
            self._watches.add(call)
            try:
                async with contextlib.aclosing(self._stream(call, next_rev)) as events:
                    async for event in events:
                        yield event
                        next_rev = event.revision + 1
            except _Progress as progress:
                next_rev = max(next_rev, progress.next_rev)
            except rpc.AioRpcError:
                # Any broken stream resumes from next_rev, which is always safe for a watch;
                # only a stream that cannot stay up for long is reported.
                pass
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.closed and task is not None and not task.cancelling():
                    return  # close() cancelled the stream, not our task: just end
                raise
            finally:
                self._watches.discard(call)
                call.cancel()
            if broken_since is None or loop.time() - opened > 1.0:
                broken_since = loop.time()

    async def _stream(self, call: Any, next_rev: int) -> AsyncGenerator[Event, None]:
        """Events from one created watch stream, until it ends (then raises _Progress)."""
        pending: list[Any] = []
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                raise _Progress(next_rev)  # the server ended the stream: resume elsewhere
            if resp.compact_revision:
                raise Compacted(next_rev, int(resp.compact_revision))
            if resp.canceled:
                if "leader" not in resp.cancel_reason:
                    raise StoreError(f"etcd cancelled the watch: {resp.cancel_reason}")
                raise _Progress(next_rev)  # the member lost its leader: resume on another
            pending.extend(resp.events)
            if resp.fragment:
                continue  # a large revision comes in pieces; wait for the last
            if not pending:  # a progress notification: nothing more below this revision
                next_rev = max(next_rev, int(resp.header.revision) + 1)
            for pb in pending:
                event = _event(pb)
                yield event
                next_rev = event.revision + 1
            pending = []

    async def _open_watch(
        self, key: bytes, end: bytes, start: int, deadline: float, why: dict[str, str]
    ) -> tuple[Any, int]:
        """A created watch stream from ``start`` (0: now) and the revision it starts at."""
        loop = asyncio.get_running_loop()
        request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=key,
                range_end=end,
                start_revision=start,
                prev_kv=True,
                progress_notify=True,
                fragment=True,
            )
        )
        while True:
            member = await self._connect(deadline, why)
            call = member.watch.Watch(metadata=_METADATA)
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    await call.write(request)
                    resp = await call.read()
                if resp is not grpc.aio.EOF and resp.created and not resp.canceled:
                    # from now on: the first revision after the one the stream started at
                    return call, start or int(resp.header.revision) + 1
                reason = "stream ended" if resp is grpc.aio.EOF else resp.cancel_reason
                why[member.target] = f"watch refused ({reason})"
            except rpc.AioRpcError as err:
                # Creating a watch is always safe to retry: any error means "next member"
                # (a member without a leader even fails it with INTERNAL), until deadline.
                why[member.target] = f"{err.code().name} {err.details()}"
            except TimeoutError:
                why[member.target] = "watch not created in time"
            call.cancel()
            self._current = (self._current + 1) % len(self._members)
            if loop.time() >= deadline:
                raise self._unavailable(why)

    async def compact(self, revision: int) -> None:
        async def run(m: _Endpoint, left: float) -> None:
            request = rpc.CompactionRequest(revision=revision)
            await m.kv.Compact(request, timeout=left, metadata=_METADATA)

        try:
            await self._call(run, idempotent=True)
        except InvalidRequest as err:
            if "has been compacted" in str(err):
                return  # at or below the current compaction: a no-op, as the protocol says
            raise

    async def revision(self) -> int:
        resp = await self._range(rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)

    async def _readable(self, revision: int) -> bool:
        try:
            await self._range(rpc.RangeRequest(key=b"\0", revision=revision, count_only=True))
        except InvalidRequest as err:
            if "has been compacted" in str(err):
                return False
            raise
        return True

    async def status(self) -> StoreStatus:
        rev = await self.revision()
        # etcd does not report its compaction revision; find the oldest readable one by
        # bisection (about 20 cheap reads). 0 means nothing was compacted.
        lo, hi = 1, rev
        while lo < hi:
            mid = (lo + hi) // 2
            if await self._readable(mid):
                hi = mid
            else:
                lo = mid + 1
        return StoreStatus("etcd", rev, lo if lo > 1 else 0, self.endpoints)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for call in list(self._watches):
            call.cancel()  # their generators see _closed and end
        await asyncio.sleep(0)
        for member in self._members:
            await member.close()


__all__ = ["EtcdStore", "map_error"]
