"""Guest NIC identities (IPAM): unique MACs and IPs, taken in the guest's own transaction.

::

    new guest record ──> NicAllocator.realise(record, compares, ops)
        per NIC:  mac = fixed | 52:54:00:xx:xx:xx (random; retried on collision)
                  ip  = fixed | lowest free address of the pool (guest network) | null
        txn:      Compare(/podium/ipam/mac/<mac>, version = 0) + Put({"guest", "uid"})
                  Compare(/podium/ipam/ip/<addr>, version = 0) + Put({"guest", "uid"})
        record["nics"] = [{"mac", "ip": "ADDR/PREFIX" | None, "gw": ADDR | None}]
    guest delete ──> release_ops(record): Delete both index keys, in the delete's txn

Vocabulary: the *index keys* make each MAC and IP unique cluster-wide (DESIGN.md
invariant 3): a creator that lost a race to the same address fails its version
compare, re-reads and tries again; a *fixed* MAC or IP that another guest holds is a
:class:`~podium.state.Conflict` naming the holder. *Realised* NICs are what the
guest got; the spec keeps what was asked for (NICs never change on an existing guest).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from podium.model import Kind
from podium.state import _cluster, _pools, keys
from podium.store import Compare, Delete, Op, Put, Store

JSON = dict[str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAC_PREFIX = "52:54:00"  # QEMU's locally administered OUI
MAC_TRIES = 64
MAX_TXN_OPS = 128  # the store's limit per branch (etcd's default --max-txn-ops)


class Known(Protocol):
    """What a caller's cache already knows is taken (it may lag the store a little)."""

    def has_guest(self, name: str) -> bool: ...

    def has_mac(self, mac: str) -> bool: ...


def random_mac() -> str:
    """A random MAC under :data:`MAC_PREFIX` (tests replace this to force collisions)."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


@dataclass(frozen=True, slots=True)
class GuestNetwork:
    """The on-link network guest NICs get addresses from (``podium server --guest-*``).

    Addresses are taken from ``first``..``last`` (inclusive, never the gateway); each
    NIC's address carries the subnet's prefix. Raises ``ValueError`` if the pool or
    the gateway lies outside the subnet, or the pool is empty.
    """

    subnet: IPNetwork
    first: IPAddress
    last: IPAddress
    gateway: IPAddress | None = None

    def __post_init__(self) -> None:
        for what, addr in (("pool start", self.first), ("pool end", self.last)):
            if addr not in self.subnet:
                raise ValueError(f"{what} {addr} is not inside subnet {self.subnet}")
        if self.gateway is not None and self.gateway not in self.subnet:
            raise ValueError(f"gateway {self.gateway} is not inside subnet {self.subnet}")
        if int(self.first) > int(self.last):
            raise ValueError(f"pool {self.first}-{self.last} is empty: its start is after its end")

    @classmethod
    def of(cls, subnet: str, pool: str | None = None, gateway: str | None = None) -> GuestNetwork:
        """From text: ``10.0.0.0/24``, ``10.0.0.10-10.0.0.200``, ``10.0.0.1``.

        The default pool is the whole subnet less its network and broadcast addresses.
        Raises ``ValueError`` saying what is wrong.
        """
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as err:
            raise ValueError(f"subnet {subnet!r} is not a network in CIDR form ({err})") from None
        gw = _address(gateway, "gateway") if gateway else None
        if pool:
            start, sep, end = pool.partition("-")
            if not sep:
                raise ValueError(f"pool {pool!r} is not FIRST-LAST, e.g. 10.0.0.10-10.0.0.200")
            first, last = _address(start.strip(), "pool start"), _address(end.strip(), "pool end")
        else:
            first, last = net[0], net[-1]
            if net.num_addresses > 2:
                first = net[1]
                last = net[-2] if net.version == 4 else net[-1]
        return cls(net, first, last, gw)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __str__(self) -> str:
        gw = f" gateway {self.gateway}" if self.gateway else ""
        return f"{self.subnet} pool {self.first}-{self.last}{gw}"


def _address(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IP address") from None


def _holder(raw: bytes) -> str:
    """``guest 'a'``, or ``Profile 'web' (nic 0)`` for a profile's address."""
    value = _cluster.loads(raw)
    if "guest" in value:
        return f"guest {value['guest']!r}"
    return _pools.holder_of(value)


class NicAllocator:
    """Realises the NICs of the guests one transaction creates (one allocator per attempt).

    Reads the index keys, never writes: the caller commits the compares and puts it
    appends. A failed commit means a race was lost: make a new allocator and retry.
    ``reserve``: the specs of every guest the transaction may create, so that no
    allocated address is one that a later guest of the batch asks for by name.
    """

    def __init__(
        self,
        store: Store,
        network: GuestNetwork | None,
        *,
        reserve: Sequence[JSON] = (),
        known: Known | None = None,
    ) -> None:
        self._store = store
        # known: the caller's cache says which MACs are taken, so a random MAC is not
        # looked up in the store (24 random bits: at a million guests 6% of picks are
        # taken). One taken since the cache last caught up fails the version compare;
        # the caller then retries without ``known``.
        self._known = known
        self._network = network
        self._macs: dict[str, str] = {}  # taken in this transaction -> guest
        self._ips: dict[IPAddress, str] = {}
        self._fixed_macs = {n["mac"] for spec in reserve for n in _nics(spec) if n.get("mac")}
        self._fixed_ips = {
            ipaddress.ip_interface(n["ip"]).ip
            for spec in reserve
            for n in _nics(spec)
            if n.get("ip")
        }
        self._used: set[IPAddress] | None = None  # held in the store (read once)
        self._cursor = int(network.first) if network else 0  # all below it are taken

    async def realise(self, record: JSON, compares: list[Compare], ops: list[Op]) -> None:
        """Give every NIC of ``record["spec"]`` a MAC (and an IP); set ``record["nics"]``.

        Raises :class:`~podium.state.Conflict` if a fixed MAC or IP is held by another
        guest, or the pool has no free address.
        """
        name = record["name"]
        owner = _cluster.dumps({"guest": name, "uid": record["uid"]})
        nics = _nics(record["spec"])
        self._fixed_macs.update(n["mac"] for n in nics if n.get("mac"))
        self._fixed_ips.update(ipaddress.ip_interface(n["ip"]).ip for n in nics if n.get("ip"))
        chosen: dict[int, tuple[str, str | None, str | None]] = {}
        fixed_first = sorted(range(len(nics)), key=lambda i: not nics[i].get("ip"))
        for i in fixed_first:
            mac = await self._mac(nics[i].get("mac"), name)
            ip, gw = await self._ip(nics[i].get("ip"), name)
            chosen[i] = (mac, ip, gw)
        realised: list[JSON] = []
        for i in range(len(nics)):
            mac, ip, gw = chosen[i]
            index = [keys.mac_key(mac)]
            if ip is not None:
                index.append(keys.ip_key(ip.split("/")[0]))
            for key in index:
                compares.append(Compare(key, "version", "=", 0))
                ops.append(Put(key, owner))
            realised.append({"mac": mac, "ip": ip, "gw": gw})
        record["nics"] = realised

    async def reconfigure(
        self, current: JSON, record: JSON, compares: list[Compare], ops: list[Op]
    ) -> None:
        """An existing guest's new spec: its NICs must stay as declared (409 otherwise).

        A guest stored before NICs existed gets its NICs now.
        """
        old = current["spec"].get("nics", [{}])
        new = record["spec"].get("nics", [{}])
        if old != new:
            raise _cluster.Conflict(
                f"Guest {record['name']!r}: NICs cannot change on an existing guest "
                f"(declared {old}, now {new}); keep them, or delete the guest and apply it again"
            )
        if "nics" not in current:
            await self.realise(record, compares, ops)

    async def _mac(self, fixed: str | None, guest: str) -> str:
        if fixed is not None:
            holder = self._macs.get(fixed)
            if holder is None:
                kv = await self._store.get(keys.mac_key(fixed))
                holder = _holder(kv.value) if kv is not None else None
            if holder is not None:
                raise _cluster.Conflict(
                    f"MAC {fixed} is held by {holder}: choose another MAC for {guest!r}"
                )
            self._macs[fixed] = guest
            return fixed
        for _ in range(MAC_TRIES):
            mac = random_mac()
            if (
                mac in self._macs
                or mac in self._fixed_macs
                or (self._known is not None and self._known.has_mac(mac))
                or (self._known is None and await self._store.get(keys.mac_key(mac)) is not None)
            ):
                continue
            self._macs[mac] = guest
            return mac
        raise _cluster.Conflict(f"no free MAC found under {MAC_PREFIX} after {MAC_TRIES} tries")

    async def _ip(self, fixed: str | None, guest: str) -> tuple[str | None, str | None]:
        net = self._network
        if fixed is not None:
            iface = ipaddress.ip_interface(fixed)
            addr = iface.ip
            on_link = net is not None and addr in net.subnet
            if net is not None and addr == net.gateway:
                raise _cluster.Conflict(
                    f"IP {addr} is the guest network's gateway: choose another IP for {guest!r}"
                )
            holder = self._ips.get(addr)
            if holder is None:
                kv = await self._store.get(keys.ip_key(str(addr)))
                holder = _holder(kv.value) if kv is not None else None
            if holder is not None:
                raise _cluster.Conflict(
                    f"IP {addr} is held by {holder}: choose another IP for {guest!r}"
                )
            self._ips[addr] = guest
            if "/" in fixed:
                prefix = iface.network.prefixlen
            elif net is not None and on_link:
                prefix = net.subnet.prefixlen
            else:
                prefix = addr.max_prefixlen
            gw = str(net.gateway) if net is not None and on_link and net.gateway else None
            return f"{addr}/{prefix}", gw
        if net is None:
            return None, None
        addr = await self._next_free(net)
        self._ips[addr] = guest
        gw = str(net.gateway) if net.gateway else None
        return f"{addr}/{net.subnet.prefixlen}", gw

    async def _next_free(self, net: GuestNetwork) -> IPAddress:
        """The lowest address of the pool that nobody holds (and is not the gateway)."""
        if self._used is None:
            res = await self._store.range(keys.IPAM_IP)
            self._used = set()
            for kv in res.kvs:
                try:
                    self._used.add(ipaddress.ip_address(kv.key[len(keys.IPAM_IP) :]))
                except ValueError:
                    continue
        make = type(net.first)
        for n in range(self._cursor, int(net.last) + 1):
            addr = make(n)
            free = addr not in self._used and addr not in self._ips
            if free and addr != net.gateway and addr not in self._fixed_ips:
                self._cursor = n
                return addr
        raise _cluster.Conflict(
            f"no free IP left in the guest pool {net.first}-{net.last} ({len(self._used)} in "
            "use): widen --guest-pool, or delete guests"
        )


def _nics(spec: JSON) -> list[JSON]:
    nics: list[JSON] = spec.get("nics", [{}])
    return nics


def release_ops(record: JSON) -> list[Op]:
    """Deletes of the guest's index keys (in the same transaction as the record's).

    A guest that wears a profile releases only the profile (its addresses stay the
    profile's, for the next guest that wears it).
    """
    profile = record["spec"].get("profile")
    if profile:
        return [Delete(keys.profile_use_key(profile))]
    ops: list[Op] = []
    for nic in record.get("nics", []):
        ops.append(Delete(keys.mac_key(nic["mac"])))
        if nic.get("ip"):
            ops.append(Delete(keys.ip_key(nic["ip"].split("/")[0])))
    return ops


def assignment_spec(record: JSON) -> JSON:
    """The spec an agent gets: the guest's spec with its *realised* NICs.

    A guest that wears a profile also gets the profile's HBAs (with their LUNs) and
    boot order; its NICs carry their ``network`` and ``vlan``.
    """
    spec: JSON = record["spec"]
    if "nics" not in record:
        return spec
    extra: JSON = {k: record[k] for k in ("hbas", "boot") if k in record}
    return {**spec, "nics": record["nics"], **extra}


async def create_owned_guests(
    state: _cluster.ClusterState,
    app: str,
    specs: Sequence[tuple[str, JSON]],
    *,
    guard: Sequence[Compare] = (),
    known: Known | None = None,
) -> int:
    """Create guests owned by ``app`` with their NICs, skipping names that exist.

    ``known``: the caller's cache of guest names and MACs: the first attempt reads
    nothing from the store and relies on the transaction's compares; a lost race re-reads.

    As many guests per transaction as the store's operation limit allows; a lost race
    re-reads and retries. Returns how many were created; raises
    :class:`~podium.state.Conflict` if races keep being lost, or no address is free,
    and :class:`~podium.state.GuardFailed` once a compare of ``guard`` (every
    transaction carries them: leadership) fails.
    """
    store = state.store
    todo = list(specs)
    created = losses = 0
    while todo:
        nics = NicAllocator(
            store, state.guest_network, reserve=[spec for _, spec in todo], known=known
        )
        compares: list[Compare] = []
        ops: list[Op] = []
        batch = consumed = 0
        for name, spec in todo:
            key = keys.object_key(Kind.GUEST, name)
            exists = known.has_guest(name) if known is not None else await store.get(key)
            if exists:
                consumed += 1
                continue
            record = state._new_record(Kind.GUEST, name, spec, owner=app)
            more_compares: list[Compare] = [Compare(key, "version", "=", 0)]
            more_ops: list[Op] = []
            await nics.realise(record, more_compares, more_ops)
            more_ops.append(Put(key, _cluster.dumps(record)))
            size = max(len(ops) + len(more_ops), len(compares) + len(more_compares) + len(guard))
            if batch and size > MAX_TXN_OPS:
                break
            compares += more_compares
            ops += more_ops
            batch += 1
            consumed += 1
        if batch:
            result = await store.txn([*compares, *guard], ops)
            if not result.succeeded:
                await _cluster.check_guard(store, guard, f"creating guests of App {app!r}")
                known = None  # the cache was behind: read the store from now on
                losses += 1
                if losses > _cluster.MAX_TXN_RETRIES:
                    raise _cluster.Conflict(
                        f"creating guests of App {app!r}: lost {losses} races; try again"
                    )
                continue
            created += batch
        todo = todo[consumed:]
    return created
