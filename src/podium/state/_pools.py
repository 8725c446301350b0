"""Pools: values handed out from ranges, each held by exactly one holder.

::

    PoolAllocator (one per transaction attempt; reads, never writes)
      take(pool, holder)          no contention: the lowest free value (reads the pool once)
                                  after a lost race, or while this process lost one on the
                                  pool lately: a random free value, probed with a get (big
                                  MAC/WWN pools: anywhere; others: among the lowest
                                  ``spread`` free ones this process last saw), else as above
                                  MACs and WWNs also free in the global index
      claim(pool | type, value)   a fixed (imported) value: Conflict naming its holder
        -> Compare(/podium/pools/<pool>/<value>, version = 0) + Put({holder, uid, what})
           Compare(/podium/ipam/{mac,wwn}/<value>, version = 0) + Put({profile, uid, what})

Vocabulary: a *holder* is the object that holds a value ("Profile/db", what "nic 0
mac"); the *index* keys make MACs and WWNs unique cluster-wide, across pools and guests.
Values are numbers inside the allocator and canonical text in keys
(:func:`podium.model.format_value`). A caller that loses its commit makes a new allocator
(with a larger ``spread``) and tries again. Every value taken, however chosen, is
guarded by its version=0 compares: the choice only decides how often a race is lost.
"""

from __future__ import annotations

import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from podium.model import PoolSpecModel, PoolType, format_value, parse_value
from podium.state import _cluster, keys
from podium.store import Compare, Get, Op, Put, Store

JSON = dict[str, Any]
MAX_INDEX_SKIPS = 256  # pool values found held in the index (by guests, other pools) per take
MAX_PROBES = 16  # random values probed per take after a lost race, before reading the pool
SPARSE_MIN = 4096  # a MAC/WWN pool this big is probed at random anywhere after a lost race
SPARSE = (PoolType.MAC, PoolType.WWN)
CONTENDED_S = 2.0  # a race lost on a pool this recently (this process): first takes probe too
CONTENDED_SPREAD = 64  # ... among this many lowest free values
LABELS = {
    PoolType.MAC: "MAC",
    PoolType.WWN: "WWN",
    PoolType.IPV4: "IP",
    PoolType.IPV6: "IP",
    PoolType.VLAN: "VLAN",
}


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool as the allocator uses it: its range as numbers, values never handed out."""

    name: str
    type: PoolType
    first: int
    last: int
    excluded: frozenset[int] = frozenset()
    subnet: str | None = None
    gateway: str | None = None

    @classmethod
    def of(cls, name: str, spec: JSON) -> Pool:
        """From a stored (already validated) spec."""
        model = PoolSpecModel.model_validate(spec)
        first, last = model.bounds()
        excluded = frozenset(n for n in model.excluded() if first <= n <= last)
        return cls(name, model.type, first, last, excluded, model.subnet, model.gateway)

    @property
    def size(self) -> int:
        """How many values the pool can hand out."""
        return self.last - self.first + 1 - len(self.excluded)

    @property
    def prefix(self) -> int | None:
        """The subnet's prefix length (IP pools)."""
        return int(self.subnet.split("/")[1]) if self.subnet else None

    def text(self, value: int) -> str:
        return format_value(self.type, value)

    def check_member(self, value: int, holder: Holder) -> None:
        """Refuse a fixed value this pool cannot hold. Raises :class:`Conflict`."""
        label = LABELS[self.type]
        where = f"{label} {self.text(value)} of {holder.describe()}"
        if not self.first <= value <= self.last:
            raise _cluster.Conflict(
                f"{where} is outside Pool {self.name!r} ({self.text(self.first)}-"
                f"{self.text(self.last)}): choose an address inside it, or drop the pool "
                "to import it unpooled"
            )
        if value in self.excluded:
            raise _cluster.Conflict(
                f"{where} is the gateway or a reserved address of Pool {self.name!r}: "
                "choose another"
            )


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a value: ``Profile/db`` (uid) for ``nic 0 mac``."""

    kind: str
    name: str
    uid: str
    what: str

    def pool_value(self) -> bytes:
        holder = f"{self.kind}/{self.name}"
        return _cluster.dumps({"holder": holder, "uid": self.uid, "what": self.what})

    def index_value(self) -> bytes:
        return _cluster.dumps({self.kind.lower(): self.name, "uid": self.uid, "what": self.what})

    def describe(self) -> str:
        return _describe(self.kind, self.name, self.what)


def _describe(kind: str, name: str, what: str) -> str:
    part = what.removesuffix(" mac")
    return f"{kind} {name!r}" + (f" ({part})" if part else "")


def holder_of(value: JSON) -> str:
    """``Profile 'web' (nic 0)`` or ``Guest 'x'``: who holds a pool or index key's value."""
    if "holder" in value:
        kind, _, name = str(value["holder"]).partition("/")
        return _describe(kind, name, str(value.get("what", "")))
    for kind in ("profile", "network", "guest"):
        if kind in value:
            return _describe(kind.capitalize(), str(value[kind]), str(value.get("what", "")))
    return "another object"


def index_key(kind: PoolType, text: str) -> str | None:
    """The cluster-wide index key of a MAC or WWN (``None``: IPs and VLANs have none)."""
    if kind is PoolType.MAC:
        return keys.mac_key(text)
    if kind is PoolType.WWN:
        return keys.wwn_key(text)
    return None


def next_free(first: int, last: int, taken: set[int] | frozenset[int], start: int) -> int | None:
    """The lowest value in ``max(start, first)..last`` not in ``taken`` (``None``: none).

    Bounded by ``len(taken) + 1`` steps: each step past the first skips a taken value,
    so a nearly empty 16M-value pool costs one step, not a scan.
    """
    n = max(start, first)
    for _ in range(len(taken) + 1):
        if n > last:
            return None
        if n not in taken:
            return n
        n += 1
    return None


class PoolAllocator:
    """Takes and claims pool values for the objects of one transaction (one per attempt).

    Reads pool and index keys, never writes: the caller commits the compares and puts
    this appends. ``spread`` 0 (the first attempt) takes the lowest free values, from
    one read of each pool. After a lost race the caller passes a larger ``spread``, and
    each take picks a random free value instead, so racing appliers stop choosing the
    same: anywhere in a big MAC or WWN pool, else among the lowest ``spread`` free
    values this process last saw (:class:`_Hints`, no re-read), each probed with a get
    first; after :data:`MAX_PROBES` held ones it reads the pool as the first attempt.
    A first attempt does the same (``spread`` :data:`CONTENDED_SPREAD`) while this
    process lost a race on the pool in the last :data:`CONTENDED_S` seconds: under a
    burst of appliers, only the lowest free value would make all but one lose again.
    ``fixed``: values some object of the transaction asks for by name, never taken.
    ``clock``: monotonic seconds, for that window.
    """

    def __init__(
        self,
        store: Store,
        *,
        spread: int = 0,
        fixed: Iterable[tuple[PoolType, int]] = (),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._spread = spread
        self._rng = rng or random.Random()
        self._clock = clock
        self._hints = _hints(store)
        self._fixed: set[tuple[PoolType, int]] = set(fixed)
        self._used: dict[str, set[int]] = {}  # per pool read: held in the store or taken here
        self._taken: dict[str, set[int]] = {}  # per pool: taken or claimed here
        self._cursor: dict[str, int] = {}
        self._here: dict[tuple[PoolType, int], Holder] = {}  # taken in this transaction

    async def used(self, pool: Pool) -> set[int]:
        """The values of ``pool`` held in the store (read once), plus those taken here."""
        if pool.name not in self._used:
            prefix = keys.pool_prefix(pool.name)
            res = await self._store.range(prefix)
            used: set[int] = set()
            for kv in res.kvs:
                try:
                    used.add(parse_value(pool.type, kv.key[len(prefix) :]))
                except ValueError:
                    continue  # not a value of this pool's type: ignore, never hand out
            self._hints.seen[pool.name] = set(used)
            self._used[pool.name] = used | self._taken.get(pool.name, set())
        return self._used[pool.name]

    async def take(self, pool: Pool, holder: Holder, compares: list[Compare], ops: list[Op]) -> str:
        """A free value of ``pool`` for ``holder``; its keys are added to the lists.

        Raises :class:`~podium.state.Conflict` when the pool is exhausted.
        """
        spread = self._spread
        if spread > 0:
            self._hints.lost[pool.name] = self._clock()
        elif self._clock() - self._hints.lost.get(pool.name, -math.inf) < CONTENDED_S:
            spread = CONTENDED_SPREAD
        value = await self._probed(pool, spread) if spread > 0 else None
        if value is None:
            value = await self._lowest(pool, holder)
        self._hold(pool, value, holder, compares, ops)
        return pool.text(value)

    async def _probed(self, pool: Pool, spread: int) -> int | None:
        """Under contention: a random value found free by a get (``None``: none found)."""
        seen = self._hints.seen.get(pool.name, set())
        known = self._used.get(pool.name, seen) | self._taken.get(pool.name, set())
        blocked = self._blocked(pool, known)
        if pool.type in SPARSE and pool.size >= SPARSE_MIN:
            candidates: Iterable[int] = (
                self._rng.randint(pool.first, pool.last) for _ in range(MAX_PROBES)
            )
        elif pool.name in self._hints.seen or pool.name in self._used:
            lowest = list(_free(pool, blocked, spread))
            candidates = self._rng.sample(lowest, min(MAX_PROBES, len(lowest)))
        else:
            return None  # nothing seen of this pool yet: read it
        for value in candidates:
            if value in blocked or (pool.type, value) in self._here:
                continue
            if await self._held(pool, value):
                blocked.add(value)
                seen.add(value)  # a hint for this process's next lost race
                continue
            return value
        return None

    async def _held(self, pool: Pool, value: int) -> bool:
        """Whether ``value``'s pool key, or its index key (MACs, WWNs), exists now."""
        text = pool.text(value)
        gets = [Get(keys.pool_key(pool.name, text))]
        index = index_key(pool.type, text)
        if index is not None:
            gets.append(Get(index))
        res = await self._store.txn([], gets)
        return any(r.kvs for r in res.results)

    async def _lowest(self, pool: Pool, holder: Holder) -> int:
        """The lowest free value of ``pool`` (from a random start, after a lost race)."""
        used = await self.used(pool)
        cursor = self._cursor.get(pool.name)
        if cursor is None:
            cursor = await self._start(pool, used)
        blocked = self._blocked(pool, used)
        skips = 0
        for _ in range(pool.size + MAX_INDEX_SKIPS + 2):  # each round takes or blocks a value
            value = next_free(pool.first, pool.last, blocked, cursor)
            if value is None and cursor > pool.first:
                cursor = pool.first  # wrapped: a random start may have skipped free values
                continue
            if value is None:
                raise _cluster.Conflict(
                    f"Pool {pool.name!r} is exhausted ({pool.size:,} values, "
                    f"{len(used):,} in use) while allocating for {holder.describe()}: widen "
                    "its range, add a pool, or delete profiles that use it"
                )
            text = pool.text(value)
            index = index_key(pool.type, text)
            if index is not None and await self._store.get(index) is not None:
                used.add(value)
                blocked.add(value)
                # held in this pool since we read it (a race), or outside it: a guest's MAC,
                # an overlapping pool. Only the latter counts against the pool's range.
                if await self._store.get(keys.pool_key(pool.name, text)) is None:
                    skips += 1
                    if skips > MAX_INDEX_SKIPS:
                        break
                continue
            self._cursor[pool.name] = value + 1
            return value
        raise _cluster.Conflict(
            f"Pool {pool.name!r}: {MAX_INDEX_SKIPS} of its free values are held by others "
            "(guests or overlapping pools): give it a range nobody else uses"
        )

    async def claim(
        self,
        where: Pool | PoolType,
        text: str,
        holder: Holder,
        compares: list[Compare],
        ops: list[Op],
    ) -> str:
        """Hold a fixed (imported) value, in ``where`` if a pool. Returns its canonical text.

        Raises :class:`~podium.state.Conflict` naming the holder if the value is taken,
        or if it lies outside the pool.
        """
        pool = where if isinstance(where, Pool) else None
        kind = where.type if isinstance(where, Pool) else where
        value = parse_value(kind, text) if kind is not PoolType.MAC else _mac_number(text)
        canon = format_value(kind, value)
        if pool is not None:
            pool.check_member(value, holder)
        taken_by = self._here.get((kind, value))
        owner = (
            taken_by.describe() if taken_by is not None else await self._holder(pool, kind, canon)
        )
        if owner is not None:
            raise _cluster.Conflict(
                f"{LABELS[kind]} {canon} is held by {owner}: choose another for "
                f"{holder.describe()}, or delete its holder first"
            )
        if pool is not None:
            self._hold(pool, value, holder, compares, ops)
        else:
            self._index(kind, canon, holder, compares, ops)
            self._here[(kind, value)] = holder
        return canon

    async def _holder(self, pool: Pool | None, kind: PoolType, text: str) -> str | None:
        keys_to_check = [k for k in (index_key(kind, text),) if k is not None]
        if pool is not None:
            keys_to_check.append(keys.pool_key(pool.name, text))
        for key in keys_to_check:
            kv = await self._store.get(key)
            if kv is not None:
                return holder_of(_cluster.loads(kv.value))
        return None

    async def _start(self, pool: Pool, used: set[int]) -> int:
        """Where the first take from ``pool`` starts: the lowest free, or a random free one."""
        if self._spread <= 0:
            return pool.first
        blocked = self._blocked(pool, used)
        n = pool.first
        for _ in range(self._rng.randrange(self._spread)):  # bounded by spread
            found = next_free(pool.first, pool.last, blocked, n)
            if found is None:
                return pool.first
            n = found + 1
        return n

    def _blocked(self, pool: Pool, used: set[int]) -> set[int]:
        fixed = {v for t, v in self._fixed if t is pool.type and pool.first <= v <= pool.last}
        return used | pool.excluded | fixed

    def _hold(
        self, pool: Pool, value: int, holder: Holder, compares: list[Compare], ops: list[Op]
    ) -> None:
        text = pool.text(value)
        self._taken.setdefault(pool.name, set()).add(value)
        if pool.name in self._used:
            self._used[pool.name].add(value)
        seen = self._hints.seen.get(pool.name)
        if seen is not None:
            seen.add(value)  # racing appliers of this process pick others after a lost race
        self._here[(pool.type, value)] = holder
        key = keys.pool_key(pool.name, text)
        compares.append(Compare(key, "version", "=", 0))
        ops.append(Put(key, holder.pool_value()))
        self._index(pool.type, text, holder, compares, ops)

    @staticmethod
    def _index(
        kind: PoolType, text: str, holder: Holder, compares: list[Compare], ops: list[Op]
    ) -> None:
        index = index_key(kind, text)
        if index is not None:
            compares.append(Compare(index, "version", "=", 0))
            ops.append(Put(index, holder.index_value()))


@dataclass(slots=True)
class _Hints:
    """What this process's allocators learnt of one store's pools, for the next ones.

    Hints only (stale either way): every take is still compared at commit.
    """

    # per pool: the values last read held, plus those taken or found held since, so a
    # retry looks for free values without re-reading the pool
    seen: dict[str, set[int]] = field(default_factory=dict)
    lost: dict[str, float] = field(default_factory=dict)  # per pool: when a race was lost


_HINTS: weakref.WeakKeyDictionary[Store, _Hints] = weakref.WeakKeyDictionary()


def _hints(store: Store) -> _Hints:
    return _HINTS.setdefault(store, _Hints())


def _free(pool: Pool, blocked: set[int], count: int) -> Iterator[int]:
    """The lowest ``count`` values of ``pool`` not in ``blocked`` (fewer if it is full)."""
    n = pool.first
    for _ in range(count):  # each step is bounded by len(blocked) in next_free
        found = next_free(pool.first, pool.last, blocked, n)
        if found is None:
            return
        yield found
        n = found + 1


def _mac_number(text: str) -> int:
    """A fixed MAC may be universally administered (imported hardware): parse it as such."""
    return int(text.replace(":", ""), 16)
