"""ClusterState: every read and write of podium's state, as typed store transactions.

The API, the controllers and the tools all go through here, so the key layout
(:mod:`podium.state.keys`) and the guards of each write live in one place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from podium.model import (
    Binding,
    GuestState,
    HostName,
    HostSpec,
    HostState,
    Kind,
    Manifest,
    Resources,
)
from podium.state import _binds, _identities, _ipam, _migrations, _profiles, keys
from podium.store import Compare, Delete, InvalidRequest, KeyValue, Op, Put, Store

if TYPE_CHECKING:
    from podium.state._ipam import GuestNetwork

Clock = Callable[[], float]
JSON = dict[str, Any]

MAX_TXN_RETRIES = 20


# orjson: the same canonical form as ``json.dumps(sort_keys=True, separators=(",", ":"))``
# at ~4x its speed, except that it writes non-ASCII as UTF-8 where the stdlib escaped it
# as \uXXXX (both read back equal), NaN and infinities as null (the stdlib wrote NaN and
# Infinity, which are not JSON; measures are checked finite at the API), floats below
# 1e-4 as 1e-7 (the stdlib: 1e-07), and non-str keys (OPT_NON_STR_KEYS, as the stdlib)
# sorted as strings, not as numbers. A value written before may so be rewritten once.
_DUMPS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _float(value: Any) -> float:
    """Float subclasses (numpy.float64) as the stdlib writes them; orjson refuses them."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Canonical JSON (sorted keys, compact), so equal values compare equal as bytes."""
    try:
        return orjson.dumps(value, default=_float, option=_DUMPS)
    except orjson.JSONEncodeError:
        # What orjson refuses: ints beyond 64 bits, nesting deeper than 254, strings with
        # lone surrogates, or no JSON at all: the stdlib writes these exactly as podium did
        # before orjson, or raises its own TypeError/ValueError as before.
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def loads(raw: bytes) -> Any:
    """The value of ``raw``; ``ValueError`` (``json.JSONDecodeError``) if it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # What the stdlib also read: NaN/Infinity written before orjson, UTF-16/32 text;
        # anything else raises the stdlib's ValueError, as before. (orjson reads integers
        # beyond 64 bits as floats; podium stores none: counts, revisions and sizes fit.)
        return json.loads(raw)


class StateError(Exception):
    """Root of state-layer errors (``podium.state``).

    ::

        StateError
        ├── NotFound        the object does not exist
        ├── Conflict        a guarded write lost a race or breaks an ownership rule
        │   └── GuardFailed a caller's guard (e.g. leadership) no longer holds: do not retry
        └── StaleEpoch      an agent reported for a binding that is no longer current
    """


class NotFound(StateError):
    """The named object does not exist."""


class Conflict(StateError):
    """The write conflicts with the current state (retry, or change the request)."""


class GuardFailed(Conflict):
    """A compare the caller added (e.g. ``leadership.compare``) failed: a deposed leader."""


async def check_guard(store: Store, guard: Sequence[Compare], what: str) -> None:
    """Raise :class:`GuardFailed` if any of ``guard`` (``=`` on mod/version/create) fails.

    Called after a guarded transaction failed, to tell a lost race (retry) from a
    guard that no longer holds (never retry: someone else leads now).
    """
    for compare in guard:
        kv = await store.get(compare.key)
        field_value = {
            "mod": kv.mod_revision if kv else 0,
            "version": kv.version if kv else 0,
            "create": kv.create_revision if kv else 0,
        }.get(compare.target)
        if compare.op == "=" and field_value is not None and field_value != compare.value:
            raise GuardFailed(f"{what}: guard on {compare.key} no longer holds (deposed leader?)")


class StaleEpoch(StateError):
    """The reporter is not the current holder of the guest's binding."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Per object: ``created``, ``configured`` or ``unchanged``; and the revision written."""

    actions: tuple[tuple[str, str, str], ...]
    revision: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """What an agent is asked to run: one guest at one epoch."""

    guest: str
    uid: str
    epoch: int
    spec: JSON
    extra: JSON = field(default_factory=dict)  # e.g. "backup", "incoming", "migrate"

    def to_dict(self) -> JSON:
        """The assignment as the wire API sends it."""
        return {**self.extra, "guest": self.guest, "uid": self.uid, "epoch": self.epoch,
                "spec": self.spec}  # fmt: skip


class ClusterState:
    """Typed operations over a :class:`~podium.store.Store`."""

    def __init__(
        self, store: Store, *, clock: Clock = time.time, guest_network: GuestNetwork | None = None
    ) -> None:
        self.store = store
        self._clock = clock
        self.guest_network = guest_network  # IPs for guest NICs (None: MACs only)

    # -- generic helpers ---------------------------------------------------------

    async def _get_json(self, key: str) -> tuple[Any, KeyValue | None]:
        kv = await self.store.get(key)
        return (loads(kv.value) if kv else None), kv

    # -- objects (App, Guest, Host) ------------------------------------------------

    async def apply(self, manifests: Sequence[Manifest]) -> ApplyResult:
        """Create or update every object in one transaction: all or nothing.

        A Guest owned by an App cannot be applied directly (change the App).
        """
        for attempt in range(MAX_TXN_RETRIES):
            compares: list[Compare] = []
            ops: list[Op] = []
            actions: dict[tuple[str, str], str] = {}
            nics = _ipam.NicAllocator(
                self.store, self.guest_network, reserve=[m.spec for m in manifests]
            )
            idents = _profiles.Realiser(self, manifests, attempt=attempt)
            # every object's current record at once: one store round trip, not one per
            # object (under load each round trip waits behind a batch of writes)
            names = [keys.object_key(m.kind, m.name) for m in manifests]
            found = dict(zip(names, await asyncio.gather(*map(self._get_json, names)), strict=True))
            for m in _profiles.in_order(manifests):
                key = keys.object_key(m.kind, m.name)
                current, kv = found[key]
                if current and current.get("owner"):
                    raise Conflict(
                        f"{m.kind.value} {m.name!r} is owned by App {current['owner']!r}; "
                        "change the App instead"
                    )
                if kv is None:
                    record = self._new_record(m.kind, m.name, m.spec)
                    if m.kind is Kind.GUEST and m.spec.get("profile"):
                        await idents.wear(record, compares, ops)
                    elif m.kind is Kind.GUEST:
                        await nics.realise(record, compares, ops)
                    await idents.realise(record, compares, ops)
                    compares.append(Compare(key, "version", "=", 0))
                    actions[(m.kind.value, m.name)] = "created"
                else:
                    compares.append(Compare(key, "mod", "=", kv.mod_revision))
                    spec = _profiles.worn_spec(current, m.spec) if m.kind is Kind.GUEST else m.spec
                    if current["spec"] == spec and not current.get("deleting"):
                        idents.note(current)
                        actions[(m.kind.value, m.name)] = "unchanged"
                        continue
                    record = {k: v for k, v in current.items() if k != "deleting"}
                    record["spec"] = spec
                    if m.kind is Kind.GUEST:
                        _profiles.check_rewear(current, record)
                        await nics.reconfigure(current, record, compares, ops)
                    elif m.kind in _profiles.KINDS:
                        await idents.reconfigure(current, record, compares)
                    actions[(m.kind.value, m.name)] = "configured"
                idents.note(record)
                ops.append(Put(key, dumps(record)))
            _check_size(len(manifests), compares, ops)
            result = await self.store.txn(compares, ops)
            if result.succeeded:
                order = tuple((m.kind.value, m.name) for m in manifests)
                return ApplyResult(tuple((*k, actions[k]) for k in order), result.revision)
        raise Conflict("apply: objects kept changing during the apply; try again")

    def _new_record(self, kind: Kind, name: str, spec: JSON, owner: str | None = None) -> JSON:
        record: JSON = {
            "kind": kind.value,
            "name": name,
            "uid": str(uuid.uuid4()),
            "created": self._clock(),
            "spec": spec,
        }
        if owner:
            record["owner"] = owner
        return record

    async def create_owned_guests(
        self,
        app: str,
        specs: Sequence[tuple[str, JSON]],
        *,
        guard: Sequence[Compare] = (),
        known: _ipam.Known | None = None,
    ) -> int:
        """Create guests owned by ``app`` (skipping names that exist); return how many.

        ``guard``: compares every transaction carries (the app controller's leadership);
        raises :class:`GuardFailed` once one fails. ``known``: the caller's cache of
        guest names and MACs, so the first attempt need not read the store.
        """
        return await _ipam.create_owned_guests(self, app, specs, guard=guard, known=known)

    async def get_record(self, kind: Kind, name: str) -> JSON | None:
        record, _ = await self._get_json(keys.object_key(kind, name))
        return record  # type: ignore[no-any-return]

    async def list_records(self, kind: Kind) -> tuple[list[JSON], int]:
        res = await self.store.range(keys.object_prefix(kind))
        return [loads(kv.value) for kv in res.kvs], res.revision

    async def get_object(self, kind: Kind, name: str) -> JSON:
        """The API view of one object: record plus status. Raises :class:`NotFound`."""
        record = await self.get_record(kind, name)
        if record is None:
            raise NotFound(f"{kind.value} {name!r} not found")
        return await self._view(kind, record)

    async def list_objects(self, kind: Kind) -> tuple[list[JSON], int]:
        """API views of every object of a kind, and the revision they were read at."""
        records, revision = await self.list_records(kind)
        if kind in _profiles.KINDS:
            return await _identities.views(self, kind, records), revision
        if kind is Kind.GUEST:
            return await self._guest_views(records), revision
        if kind is Kind.HOST:
            return await self._host_views(records), revision
        return [await self._view(kind, r) for r in records], revision

    async def _view(self, kind: Kind, record: JSON) -> JSON:
        if kind in _profiles.KINDS:
            return (await _identities.views(self, kind, [record]))[0]
        if kind is Kind.GUEST:
            return (await self._guest_views([record]))[0]
        if kind is Kind.HOST:
            return (await self._host_views([record]))[0]
        return await self._app_view(record)

    async def _guest_views(self, records: list[JSON]) -> list[JSON]:
        bindings = await self._map(keys.BINDINGS)
        reports = await self._map(keys.GUEST_STATUS)
        migrations = await self._map(keys.MIGRATIONS)
        return [
            guest_view(
                r,
                bindings.get(r["name"]),
                reports.get(r["name"]),
                migration=_migrations.view_of(migrations.get(r["name"])),
            )
            for r in records
        ]

    async def _host_views(self, records: list[JSON]) -> list[JSON]:
        statuses = await self._map(keys.HOST_STATUS)
        live = await self._map(keys.HOST_LIVE)
        bindings = await self._map(keys.BINDINGS)
        guests = {g["name"]: g for g in (await self.list_records(Kind.GUEST))[0]}
        views = []
        for r in records:
            name = r["name"]
            allocated = Resources()
            count = 0
            for gname, b in bindings.items():
                if b.get("host") == name and gname in guests:
                    allocated = allocated + Resources.from_dict(guests[gname]["spec"]["request"])
                    count += 1
                elif (b.get("migration") or {}).get("to") == name and gname in guests:
                    # a migration's target holds the guest's resources from its start
                    allocated = allocated + Resources.from_dict(guests[gname]["spec"]["request"])
            views.append(host_view(r, statuses.get(name), name in live, allocated, count))
        return views

    async def _app_view(self, record: JSON) -> JSON:
        guests = [
            g
            for g in await self._guest_views((await self.list_records(Kind.GUEST))[0])
            if g.get("owner") == record["name"]
        ]
        running = sum(1 for g in guests if g["status"]["state"] == GuestState.RUNNING.value)
        return {
            **_public(record),
            "status": {"replicas": len(guests), "running": running},
        }

    async def _map(self, prefix: str) -> dict[str, JSON]:
        res = await self.store.range(prefix)
        return {kv.key[len(prefix) :]: loads(kv.value) for kv in res.kvs}

    async def delete_object(
        self,
        kind: Kind,
        name: str,
        *,
        force_owned: bool = False,
        guard: Sequence[Compare] = (),
    ) -> int:
        """Delete an object and everything keyed by it; return the revision.

        Deleting a guest also removes its binding and assignment (its agent stops it).
        Raises :class:`NotFound`, or :class:`Conflict` for a guest owned by an App, or a
        Pool, Network or Profile in use; :class:`GuardFailed` if one of ``guard`` fails.
        """
        if kind in _profiles.KINDS:
            return await _identities.delete(self, kind, name, guard)
        key = keys.object_key(kind, name)
        record, kv = await self._get_json(key)
        if kv is None:
            raise NotFound(f"{kind.value} {name!r} not found")
        if record.get("owner") and not force_owned:
            raise Conflict(
                f"Guest {name!r} is owned by App {record['owner']!r}; "
                "scale or delete the App instead"
            )
        ops: list[Op] = [Delete(key)]
        if kind is Kind.GUEST:
            binding, _ = await self._get_json(keys.binding_key(name))
            ops += [Delete(keys.binding_key(name)), Delete(keys.guest_status_key(name))]
            ops += [Delete(keys.console_key(name)), *_ipam.release_ops(record)]
            if binding and binding.get("host"):
                ops.append(Delete(keys.assign_key(binding["host"], name)))
            ops += _migrations.Migrations.delete_ops(name, binding)
        elif kind is Kind.HOST:
            ops += [Delete(keys.host_status_key(name)), Delete(keys.host_live_key(name))]
            ops.append(Delete(keys.host_beat_key(name)))
        result = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision), *guard], ops)
        if not result.succeeded:
            await check_guard(self.store, guard, f"deleting {kind.value} {name!r}")
            raise Conflict(f"{kind.value} {name!r} changed while deleting it; try again")
        return result.revision

    # -- hosts ---------------------------------------------------------------------

    async def register_host(
        self,
        name: HostName,
        spec: HostSpec,
        *,
        lease: int,
        driver: str,
        agent_version: str,
        taints: Mapping[str, str] | None = None,
    ) -> None:
        """Create or refresh a host's record and mark it live on ``lease``.

        Keeps an operator's cordon across re-registration. ``taints`` (``{key: value}``,
        stored in the spec) are the agent's to set: each registration replaces them.
        """
        key = keys.object_key(Kind.HOST, name)
        current, _ = await self._get_json(key)
        cordoned = bool(current and current["spec"].get("cordoned"))
        spec_json: JSON = {
            "capacity": spec.capacity.to_dict(),
            "labels": dict(spec.labels),
            "cordoned": cordoned,
        }
        if taints:
            spec_json["taints"] = dict(taints)
        for kept in ("draining", "drained"):  # an operator's drain outlives re-registration
            if current and kept in current["spec"]:
                spec_json[kept] = current["spec"][kept]
        record = (
            {**current, "spec": spec_json}
            if current
            else self._new_record(Kind.HOST, name, spec_json)
        )
        status = {
            "state": HostState.READY.value,
            "lease": lease,
            "driver": driver,
            "agent_version": agent_version,
            "since": self._clock(),
        }
        beat = {"at": status["since"], "lease": lease}  # registering counts as a renewal
        await self.store.txn(
            [],
            [
                Put(key, dumps(record)),
                Put(keys.host_status_key(name), dumps(status)),
                Put(keys.host_live_key(name), dumps({"lease": lease}), lease=lease),
                Put(keys.host_beat_key(name), dumps(beat), lease=lease),
            ],
        )

    async def record_keepalive(self, name: str, lease: int) -> None:
        """Record (server time) that ``name`` renewed ``lease`` just now.

        The host controller marks a host ``suspect`` when this gets old while the lease
        still lives. The key hangs on the lease, so it goes with it. Raises the store's
        ``LeaseNotFound`` if the lease is gone.
        """
        beat = {"at": self._clock(), "lease": lease}
        await self.store.put(keys.host_beat_key(name), dumps(beat), lease=lease)

    async def set_host_state(self, name: str, state: HostState) -> None:
        """Record a host's liveness as the controllers judge it."""
        current, _ = await self._get_json(keys.host_status_key(name))
        status = dict(current or {})
        if status.get("state") == state.value:
            return
        status.update(state=state.value, since=self._clock())
        await self.store.put(keys.host_status_key(name), dumps(status))

    async def set_cordoned(self, name: str, cordoned: bool) -> None:
        key = keys.object_key(Kind.HOST, name)
        record, kv = await self._get_json(key)
        if kv is None:
            raise NotFound(f"Host {name!r} not found")
        record["spec"]["cordoned"] = cordoned
        if not cordoned:  # uncordon ends a drain
            record["spec"].pop("draining", None)
            record["spec"].pop("drained", None)
        result = await self.store.txn(
            [Compare(key, "mod", "=", kv.mod_revision)], [Put(key, dumps(record))]
        )
        if not result.succeeded:
            raise Conflict(f"Host {name!r} changed meanwhile; try again")

    # -- bindings --------------------------------------------------------------------

    async def get_binding(self, guest: str) -> tuple[Binding, int]:
        """The guest's binding and its mod revision (0, epoch 0 if never bound)."""
        data, kv = await self._get_json(keys.binding_key(guest))
        if kv is None:
            return Binding(guest, None, 0), 0
        return Binding(guest, data.get("host"), int(data["epoch"])), kv.mod_revision

    async def bind(
        self, guest: str, host: str | None, *, expected_revision: int, extra: Sequence[Compare] = ()
    ) -> Binding | None:
        """Move a guest's binding to ``host`` (``None``: unbind) with the next epoch.

        Guarded by the binding's mod revision (0 for never bound) and ``extra``
        compares (e.g. leadership); returns the new binding, or ``None`` if a guard
        failed (re-read and decide again). The epoch also clears any epoch a live
        migration reserved; a migration in flight ends failed in the same transaction
        (its target's ``incoming`` assignment goes).
        """
        data, kv = await self._get_json(keys.binding_key(guest))
        current_rev = kv.mod_revision if kv else 0
        if current_rev != expected_revision:
            return None
        record, gkv = await self._get_json(keys.object_key(Kind.GUEST, guest))
        if gkv is None:
            return None
        old_host = data.get("host") if data else None
        epoch = _migrations.next_epoch(data)  # above any epoch a migration reserved
        migrations = _migrations.Migrations(self)
        release = await migrations.release_for_bind(guest, data, host, epoch)
        ops: list[Op] = [Put(keys.binding_key(guest), dumps({"host": host, "epoch": epoch}))]
        ops += release.ops
        if old_host and old_host != host:
            ops.append(Delete(keys.assign_key(old_host, guest)))
        if host:
            assignment = {
                "guest": guest,
                "uid": record["uid"],
                "epoch": epoch,
                "spec": _ipam.assignment_spec(record),
            }
            ops.append(Put(keys.assign_key(host, guest), dumps(assignment)))
        compares = [
            Compare(keys.binding_key(guest), "mod", "=", expected_revision),
            Compare(keys.object_key(Kind.GUEST, guest), "mod", "=", gkv.mod_revision),
            *release.compares,
            *extra,
        ]
        result = await self.store.txn(compares, ops)
        if result.succeeded:
            await migrations.released(release)
        return Binding(guest, HostName(host) if host else None, epoch) if result.succeeded else None

    async def bind_new(
        self, items: Sequence[_binds.NewBinding], *, guard: Sequence[Compare] = ()
    ) -> _binds.BulkBindResult:
        """First bindings of never-bound guests, many per transaction (see ``_binds``)."""
        return await _binds.bind_new(self.store, items, guard=guard)

    async def assignments(self, host: str) -> tuple[list[Assignment], int]:
        """What ``host`` should run now, and the revision to watch from (+1)."""
        res = await self.store.range(keys.assign_prefix(host))
        items = [loads(kv.value) for kv in res.kvs]
        return [
            Assignment(a["guest"], a["uid"], a["epoch"], a["spec"], _extra(a)) for a in items
        ], res.revision

    # -- guest status ------------------------------------------------------------------

    async def report_guest_status(
        self,
        host: str,
        guest: str,
        epoch: int,
        state: GuestState,
        message: str = "",
        *,
        usage: Mapping[str, float] | None = None,
    ) -> None:
        """Record what ``host`` observes of ``guest`` at ``epoch``.

        Raises :class:`StaleEpoch` unless ``host`` holds the current binding at
        exactly ``epoch`` (a fenced or moved-away agent cannot overwrite status).
        A report of ``stopped``/``failed`` for an epoch the host no longer holds is
        dropped the same way. ``usage`` (validated by the caller): what the guest uses
        (the rebalancer reads it). While state, host and epoch stay the same, a report
        without usage keeps the last one, and a usage report keeps ``since``; any other
        change drops the usage (it was measured of another run).
        """
        for _ in range(MAX_TXN_RETRIES):
            binding, rev = await self.get_binding(guest)
            if binding.host != host or binding.epoch != epoch:
                raise StaleEpoch(
                    f"{host} reported {guest} at epoch {epoch}, but the binding is "
                    f"{binding.host} at epoch {binding.epoch}"
                )
            old, old_kv = await self._get_json(keys.guest_status_key(guest))
            same = bool(old) and (old["state"], old["host"], old["epoch"]) == (
                state.value,
                host,
                epoch,
            )
            status: JSON = {
                "state": state.value,
                "host": host,
                "epoch": epoch,
                "message": message,
                "since": old["since"] if same and usage is not None else self._clock(),
            }
            if usage is not None:
                status["usage"] = dict(usage)
            elif same and "usage" in old:
                status["usage"] = old["usage"]
            result = await self.store.txn(
                [
                    Compare(keys.binding_key(guest), "mod", "=", rev),
                    Compare(keys.guest_status_key(guest), "mod", "=", _mod(old_kv)),
                ],
                [Put(keys.guest_status_key(guest), dumps(status))],
            )
            if result.succeeded:
                return
        raise Conflict(f"status of {guest}: too much contention")

    async def note_unplaced(
        self, guest: str, reason: str, *, guard: Sequence[Compare] = ()
    ) -> bool:
        """Record why the scheduler could not place an unbound guest (shown as its message).

        ``guard``: extra compares (leadership). True if noted (or nothing to note);
        False if the binding changed meanwhile; raises :class:`GuardFailed` if a guard
        failed.
        """
        binding, rev = await self.get_binding(guest)
        if binding.host is not None:
            return True
        status = {
            "state": GuestState.PENDING.value,
            "host": None,
            "epoch": binding.epoch,
            "message": reason,
            "since": self._clock(),
        }
        current, _ = await self._get_json(keys.guest_status_key(guest))
        if current and current.get("message") == reason and current.get("host") is None:
            return True
        result = await self.store.txn(
            [Compare(keys.binding_key(guest), "mod", "=", rev), *guard],
            [Put(keys.guest_status_key(guest), dumps(status))],
        )
        if not result.succeeded:
            await check_guard(self.store, guard, f"noting why {guest} waits")
        return result.succeeded

    # -- tokens --------------------------------------------------------------------------

    async def create_token(
        self, role: str, *, host: str | None = None, app: str | None = None, ttl: int = 0
    ) -> str:
        """Mint a bearer token; only its SHA-256 is stored. ``ttl`` 0: no expiry.

        Roles: ``admin`` (everything), ``join`` (register one new host), ``agent``
        (act for ``host`` only), ``app`` (act on ``app``'s guests only).
        """
        if role not in ROLES:
            raise ValueError(f"unknown token role {role!r}; expected one of {', '.join(ROLES)}")
        token = f"pdm_{role}_{secrets.token_urlsafe(32)}"
        record: JSON = {"role": role, "created": self._clock(), "id": token_id(token)}
        if host:
            record["host"] = host
        if app:
            record["app"] = app
        if ttl:
            record["expires"] = self._clock() + ttl
        hashed = hash_token(token)
        ops: list[Op] = [Put(keys.token_key(hashed), dumps(record))]
        if host and role == "agent":  # indexed, so a host's re-join revokes in O(its tokens)
            ops.append(Put(keys.host_tokens_prefix(host) + hashed, b"{}"))
        await self.store.txn([], ops)
        return token

    async def revoke_agent_tokens(self, host: str, *, scan: bool = False) -> list[str]:
        """Delete every agent token minted for ``host``; return their hashes.

        ``scan``: also look through all tokens, for tokens minted before the per-host
        index existed (a host that registered before this version).
        """
        prefix = keys.host_tokens_prefix(host)
        hashes = [kv.key[len(prefix) :] for kv in (await self.store.range(prefix)).kvs]
        if scan and not hashes:
            for kv in (await self.store.range(keys.TOKENS)).kvs:
                record = loads(kv.value)
                if record.get("role") == "agent" and record.get("host") == host:
                    hashes.append(kv.key[len(keys.TOKENS) :])
        for hashed in hashes:
            await self.store.txn([], [Delete(keys.token_key(hashed)), Delete(prefix + hashed)])
        return hashes

    async def lookup_token(self, token: str) -> JSON | None:
        """The token's record if it exists and has not expired."""
        record, _ = await self._get_json(keys.token_key(hash_token(token)))
        if record is None or (record.get("expires") and record["expires"] < self._clock()):
            return None
        return record  # type: ignore[no-any-return]

    async def revoke_token(self, token: str) -> bool:
        _, deleted = await self.store.delete(keys.token_key(hash_token(token)))
        return deleted > 0

    async def list_tokens(self) -> list[JSON]:
        res = await self.store.range(keys.TOKENS)
        return [loads(kv.value) for kv in res.kvs]

    # -- events --------------------------------------------------------------------------

    def now(self) -> float:
        """The state layer's clock (server time: what events and statuses are stamped with)."""
        return self._clock()

    async def emit(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        at: float | None = None,
    ) -> None:
        """Append a cluster event (shown by ``podium events``).

        ``at``: when it happened, if earlier than now (a fence an agent reports late);
        events are listed in time order, so it appears where it happened.
        """
        now = self._clock() if at is None else at
        key = f"{keys.EVENTS}{int(now * 1e9):020d}-{secrets.token_hex(3)}"
        event = {
            "time": now,
            "type": "Warning" if warning else "Normal",
            "kind": kind,
            "name": name,
            "reason": reason,
            "message": message,
        }
        await self.store.put(key, dumps(event))

    async def list_events(self, *, limit: int = 0) -> tuple[list[JSON], int]:
        res = await self.store.range(keys.EVENTS)
        kvs = res.kvs[-limit:] if limit else res.kvs
        return [loads(kv.value) for kv in kvs], res.revision

    async def prune_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; return how many were deleted."""
        res = await self.store.range(keys.EVENTS)
        old = res.kvs[: max(0, len(res.kvs) - keep)]
        for i in range(0, len(old), _ipam.MAX_TXN_OPS):  # as many per transaction as allowed
            await self.store.txn([], [Delete(kv.key) for kv in old[i : i + _ipam.MAX_TXN_OPS]])
        return len(old)


ROLES = ("admin", "join", "agent", "app")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str:
    """A short, non-secret handle for a token (for listings and logs)."""
    return hash_token(token)[:12]


def _check_size(documents: int, compares: Sequence[Compare], ops: Sequence[Op]) -> None:
    """Refuse an apply larger than one transaction may be (the API says: split it)."""
    size = max(len(compares), len(ops))
    if size > _ipam.MAX_TXN_OPS:
        raise InvalidRequest(
            f"{documents} documents need {size} operations in one transaction, more than "
            f"the store's {_ipam.MAX_TXN_OPS}: split the file into smaller applies (pools "
            "and networks first, then a few profiles and guests at a time)"
        )


def _extra(assignment: JSON) -> JSON:
    return {k: v for k, v in assignment.items() if k not in ("guest", "uid", "epoch", "spec")}


def _mod(kv: KeyValue | None) -> int:
    """A key's mod revision for a compare (0: the key is absent)."""
    return kv.mod_revision if kv else 0


def _public(record: JSON) -> JSON:
    view = {k: record[k] for k in ("kind", "name", "spec")}
    view["metadata"] = {"uid": record["uid"], "created": record["created"]}
    if record.get("owner"):
        view["owner"] = record["owner"]
    return view


def guest_view(
    record: JSON, binding: JSON | None, report: JSON | None, *, migration: JSON | None = None
) -> JSON:
    """A guest as the API shows it: state from the report of the *current* epoch only.

    ``migration`` (``{"id", "to", "state"}``) is shown while a live migration is active.
    """
    host = binding.get("host") if binding else None
    epoch = int(binding["epoch"]) if binding else 0
    state = GuestState.PENDING.value
    message = "waiting for placement" if not host else "waiting for its host to start it"
    since = record["created"]
    current = bool(report and host and report.get("host") == host and report.get("epoch") == epoch)
    if report and current:
        state, message, since = report["state"], report.get("message", ""), report["since"]
    elif report and not host and report.get("message"):
        message = report["message"]
    view = _public(record)
    view["status"] = {
        "state": state,
        "host": host,
        "uuid": record["uid"],
        "epoch": epoch,
        "message": message,
        "since": since,
        "nics": record.get("nics", []),
    }
    if migration is not None:
        view["status"]["migration"] = migration
    if current and report and report.get("usage") is not None:
        view["status"]["usage"] = report["usage"]  # measured on its host (this epoch)
    return view


def host_view(
    record: JSON, status: JSON | None, live: bool, allocated: Resources, guests: int
) -> JSON:
    """A host as the API shows it: state, capacity, allocation."""
    state = (status or {}).get("state", HostState.LOST.value)
    if not live and state == HostState.READY.value:
        state = HostState.SUSPECT.value  # lease gone, controllers have not judged it yet
    view = _public(record)
    view["status"] = {
        "state": state,
        "capacity": record["spec"]["capacity"],
        "allocated": allocated.to_dict(),
        "guests": guests,
        "cordoned": bool(record["spec"].get("cordoned")),
        "draining": bool(record["spec"].get("draining")),
        "labels": record["spec"].get("labels", {}),
        "taints": record["spec"].get("taints", {}),
        "driver": (status or {}).get("driver", ""),
        "since": (status or {}).get("since", 0.0),
    }
    return view
