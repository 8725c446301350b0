"""Pools, Networks and Profiles: the manifests of server identities (docs/profiles.md).

::

    Pool (mac | wwn | ipv4 | ipv6 | vlan: a range of values)
      └─> Network (a VLAN, fixed or from a vlan pool; an optional ip pool)
            └─> Profile (NICs on networks, HBAs with LUNs, boot order) ──worn by──> Guest

Everything checkable without the store is checked here: values well formed and of the
right family, ranges ordered and sized, IP ranges inside their subnet. Values are kept
in canonical text: MACs and WWNs lowercase with ``:``, IPs compressed, VLANs decimal.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from podium.model._qos import QosModel, merge_reservations, stored_qos

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_HINT = "lowercase letters, digits and '-', 1-63 characters, starting and ending alphanumeric"
MAX_POOL_SIZE = 1 << 24  # values per pool: a pool's keys are read whole when allocating
MAX_PROFILE_NICS = 8
MAX_HBAS = 4
MAX_LUNS = 16
MAX_LUN_GIB = 16384
MIN_RPO_S = 10


class PoolType(enum.StrEnum):
    """What a pool hands out."""

    MAC = "mac"  # locally administered unicast MACs
    WWN = "wwn"  # 64-bit Fibre Channel names (NAA 1, 2 or 5)
    IPV4 = "ipv4"  # addresses of one IPv4 subnet
    IPV6 = "ipv6"  # addresses of one IPv6 subnet
    VLAN = "vlan"  # 802.1Q VLAN ids


IP_TYPES = (PoolType.IPV4, PoolType.IPV6)
_HEX_OCTETS = {PoolType.MAC: 6, PoolType.WWN: 8}
_HINTS = {
    PoolType.MAC: "six hex pairs joined by ':', e.g. 02:00:0a:00:00:05",
    PoolType.WWN: "eight hex pairs joined by ':', e.g. 50:01:43:80:00:00:00:10",
    PoolType.IPV4: "an IPv4 address, e.g. 10.10.0.20",
    PoolType.IPV6: "an IPv6 address, e.g. fd00::20",
    PoolType.VLAN: "a VLAN id, 1..4094",
}


def parse_value(kind: PoolType, text: str | int) -> int:
    """A value's number, from text in any accepted spelling. Raises ``ValueError``.

    Checks the value's family too: a multicast or universally administered MAC, a WWN
    of an NAA other than 1, 2 or 5, a VLAN outside 1..4094 are refused.
    """
    raw = str(text).strip()
    hint = _HINTS[kind]
    if kind in _HEX_OCTETS:
        octets = _HEX_OCTETS[kind]
        digits = raw.replace(":", "") if ":" in raw else raw
        pairs = raw.split(":") if ":" in raw else [raw[i : i + 2] for i in range(0, len(raw), 2)]
        if len(pairs) != octets or any(len(p) != 2 for p in pairs):
            raise ValueError(f"{raw!r} is not a {kind.value.upper()}: use {hint}")
        try:
            value = int(digits, 16)
        except ValueError:
            raise ValueError(f"{raw!r} is not a {kind.value.upper()}: use {hint}") from None
    elif kind in IP_TYPES:
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not {hint}") from None
        if addr.version != (4 if kind is PoolType.IPV4 else 6):
            raise ValueError(f"{raw!r} is not {hint}")
        value = int(addr)
    else:
        if not raw.isdigit():
            raise ValueError(f"{raw!r} is not {hint}")
        value = int(raw)
    check_value(kind, value)
    return value


def check_value(kind: PoolType, value: int) -> None:
    """Refuse a value outside its family (see :func:`parse_value`)."""
    if kind is PoolType.MAC:
        first = value >> 40
        if first & 1:
            raise ValueError(
                f"{format_value(kind, value)} is a multicast MAC: the first octet must be even"
            )
        if not first & 2:
            raise ValueError(
                f"{format_value(kind, value)} is not locally administered: pool MACs need "
                "the 0x02 bit of the first octet set (e.g. 02:..., 0a:..., 52:...)"
            )
    elif kind is PoolType.WWN:
        naa = value >> 60
        if naa == 6:
            raise ValueError(
                f"{format_value(kind, value)} is NAA 6, a 128-bit name: QEMU presents "
                "64-bit WWNs, so use NAA 5 (or 1 or 2), e.g. 50:01:43:80:00:00:00:10"
            )
        if naa not in (1, 2, 5):
            raise ValueError(
                f"{format_value(kind, value)} has NAA {naa:x}: use a 64-bit name whose "
                "first hex digit is 1, 2 or 5"
            )
    elif kind is PoolType.VLAN and not 1 <= value <= 4094:
        raise ValueError(f"VLAN {value} is out of range: use {_HINTS[kind]}")


def format_value(kind: PoolType, value: int) -> str:
    """The canonical text of a value."""
    if kind in _HEX_OCTETS:
        octets = _HEX_OCTETS[kind]
        return ":".join(f"{(value >> (8 * i)) & 0xFF:02x}" for i in reversed(range(octets)))
    if kind is PoolType.IPV4:
        return str(ipaddress.IPv4Address(value))
    if kind is PoolType.IPV6:
        return str(ipaddress.IPv6Address(value))
    return str(value)


def canonical(kind: PoolType, text: str | int) -> str:
    """``text`` checked and spelled canonically. Raises ``ValueError``."""
    return format_value(kind, parse_value(kind, text))


def parse_range(kind: PoolType, text: str) -> tuple[int, int]:
    """``START-END`` as numbers, both ends included. Raises ``ValueError``."""
    start, sep, end = str(text).partition("-")
    if not sep:
        raise ValueError(f"range {text!r} is not START-END, e.g. {_example_range(kind)}")
    first, last = parse_value(kind, start), parse_value(kind, end)
    if first > last:
        raise ValueError(f"range {text!r} is empty: its start is after its end; swap them")
    if last - first + 1 > MAX_POOL_SIZE:
        raise ValueError(
            f"range {text!r} holds {last - first + 1:,} values; a pool holds at most "
            f"{MAX_POOL_SIZE:,}: narrow it, or split it into several pools"
        )
    if kind in _HEX_OCTETS and (first >> 60 if kind is PoolType.WWN else first >> 40) != (
        last >> 60 if kind is PoolType.WWN else last >> 40
    ):
        what = "first hex digit (the NAA)" if kind is PoolType.WWN else "first octet"
        raise ValueError(f"range {text!r} must keep its {what} the same at both ends")
    return first, last


def _example_range(kind: PoolType) -> str:
    return {
        PoolType.MAC: "02:00:0a:00:00:00-02:00:0a:00:ff:ff",
        PoolType.WWN: "50:01:43:80:00:00:00:00-50:01:43:80:00:00:ff:ff",
        PoolType.IPV4: "10.10.0.10-10.10.0.200",
        PoolType.IPV6: "fd00::10-fd00::ff",
        PoolType.VLAN: "100-199",
    }[kind]


def _check_name(value: str | None) -> str | None:
    if value is not None and not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid name: use {NAME_HINT}")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class PoolSpecModel(_Frozen):
    """A range of values of one type; IP pools name their subnet (and gateway)."""

    type: PoolType
    range: str
    subnet: str | None = None
    gateway: str | None = None
    reserved: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> PoolSpecModel:
        first, last = parse_range(self.type, self.range)
        canon = {"range": f"{format_value(self.type, first)}-{format_value(self.type, last)}"}
        if self.type not in IP_TYPES:
            for extra in ("subnet", "gateway", "reserved"):
                if getattr(self, extra) is not None:
                    raise ValueError(f"{extra} is for ipv4/ipv6 pools only: leave it out")
        else:
            if self.subnet is None:
                raise ValueError(f"an {self.type.value} pool needs subnet, e.g. 10.10.0.0/24")
            try:
                net = ipaddress.ip_network(self.subnet, strict=True)
            except ValueError as err:
                raise ValueError(
                    f"subnet {self.subnet!r} is not a network in CIDR form ({err})"
                ) from None
            if net.version != (4 if self.type is PoolType.IPV4 else 6):
                raise ValueError(f"subnet {self.subnet} is not an {self.type.value} network")
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if not (lo <= first and last <= hi):
                raise ValueError(f"range {self.range} is not inside subnet {net}: narrow it")
            if net.version == 4 and net.prefixlen < 31 and (first == lo or last == hi):
                raise ValueError(
                    f"range {self.range} includes the network or broadcast address of {net}"
                )
            canon["subnet"] = str(net)
            for what, values in (("gateway", [self.gateway]), ("reserved", self.reserved)):
                out = []
                for text in values or []:
                    if text is None:
                        continue
                    n = parse_value(self.type, text)
                    if not lo <= n <= hi:
                        raise ValueError(f"{what} {text} is not inside subnet {net}")
                    out.append(format_value(self.type, n))
                if what == "gateway" and out:
                    canon["gateway"] = out[0]
                elif what == "reserved" and values is not None:
                    object.__setattr__(self, "reserved", sorted(set(out), key=ipaddress.ip_address))
        for attr, value in canon.items():
            object.__setattr__(self, attr, value)
        return self

    def bounds(self) -> tuple[int, int]:
        """The range's first and last value (numbers)."""
        return parse_range(self.type, self.range)

    def excluded(self) -> set[int]:
        """Values of the range never handed out: the gateway and the reserved ones."""
        texts = [self.gateway, *(self.reserved or [])]
        return {parse_value(self.type, t) for t in texts if t is not None}


Name = Annotated[str, Field(min_length=1, max_length=63)]


class NetworkSpecModel(_Frozen):
    """A layer-2 network: its VLAN (fixed or from a vlan pool) and optional ip pool.

    ``allow``: the networks whose guests may talk to this one's, routed by the hosts
    (a rule is symmetric: A and B talk when either allows the other; docs/profiles.md).
    """

    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    vlan_pool: Name | None = None
    ip_pool: Name | None = None
    allow: list[Name] | None = None

    _names = field_validator("vlan_pool", "ip_pool")(_check_name)

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            _check_name(name)
        if len(set(value)) != len(value):
            raise ValueError(f"allow names a network twice: {value}")
        return value

    @model_validator(mode="after")
    def _one_vlan(self) -> NetworkSpecModel:
        if self.vlan is not None and self.vlan_pool is not None:
            raise ValueError("give vlan or vlan_pool, never both")
        if self.vlan is None and self.vlan_pool is None:
            raise ValueError("a Network needs a VLAN: give vlan (1..4094) or vlan_pool (a pool)")
        return self


class ProfileNicModel(_Frozen):
    """One NIC: its network and a MAC from ``mac_pool`` or fixed (``mac``, imported)."""

    network: Name
    mac_pool: Name | None = None
    mac: str | None = None
    ip: str | None = None

    _names = field_validator("network", "mac_pool")(_check_name)

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return format_value(PoolType.MAC, _unicast(value))

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address: give the address only, e.g. 10.10.0.20 "
                "(the prefix comes from the network's ip_pool)"
            ) from None
        return str(addr)

    @model_validator(mode="after")
    def _has_mac(self) -> ProfileNicModel:
        if self.mac is None and self.mac_pool is None:
            raise ValueError("a NIC needs a MAC: give mac_pool (allocate) or mac (import)")
        return self


def _unicast(value: str) -> int:
    """A fixed MAC may be universally administered (imported hardware) but not multicast."""
    hint = _HINTS[PoolType.MAC]
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", value):
        raise ValueError(f"{value!r} is not a MAC: use {hint}")
    n = int(value.replace(":", ""), 16)
    if (n >> 40) & 1 or n == 0:
        raise ValueError(f"{value!r} is not a unicast MAC: the first octet must be even")
    return n


class LunModel(_Frozen):
    """A volume presented as a LUN (``<volumes>/<profile>/<volume>.qcow2``)."""

    volume: Name
    size_gib: Annotated[int, Field(ge=1, le=MAX_LUN_GIB)] = 1

    _names = field_validator("volume")(_check_name)


class HbaModel(_Frozen):
    """One HBA: WWPN and WWNN (fixed or from ``wwn_pool``), LUN WWNs from ``wwn_pool``."""

    wwn_pool: Name | None = None
    wwpn: str | None = None
    wwnn: str | None = None
    luns: Annotated[list[LunModel], Field(max_length=MAX_LUNS)] = Field(default_factory=list)

    _names = field_validator("wwn_pool")(_check_name)

    @field_validator("wwpn", "wwnn")
    @classmethod
    def _wwn(cls, value: str | None) -> str | None:
        return None if value is None else canonical(PoolType.WWN, value)

    @model_validator(mode="after")
    def _sources(self) -> HbaModel:
        if self.wwn_pool is None:
            if self.wwpn is None or self.wwnn is None:
                raise ValueError("an HBA needs wwn_pool, or both wwpn and wwnn (import)")
            if self.luns:
                raise ValueError("LUN WWNs come from wwn_pool: name one to present LUNs")
        if self.wwpn is not None and self.wwpn == self.wwnn:
            raise ValueError(f"wwpn and wwnn are both {self.wwpn}: give each its own WWN")
        return self


class ProtectionModel(_Frozen):
    """Replicate the profile's volumes to the other site every ``rpo_s`` seconds."""

    rpo_s: Annotated[int, Field(ge=MIN_RPO_S, le=86400)]


BootDevice = Literal["disk", "network"]


def _default_boot() -> list[BootDevice]:
    return ["disk"]


class ProfileSpecModel(_Frozen):
    """A server's identity: NICs, HBAs with their LUNs, boot order, QoS class, protection."""

    nics: Annotated[list[ProfileNicModel], Field(max_length=MAX_PROFILE_NICS)] = Field(
        default_factory=list
    )
    hbas: Annotated[list[HbaModel], Field(max_length=MAX_HBAS)] = Field(default_factory=list)
    boot: list[BootDevice] = Field(default_factory=_default_boot)
    protection: ProtectionModel | None = None
    # The identity's QoS class: reservations, limits and shares per dimension, as a
    # Guest's ``qos``; its wearer gets them unless the Guest declares a qos of its own.
    qos: QosModel | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("qos") is not None:  # only the dimensions the class sets
            data["qos"] = {k: v for k, v in data["qos"].items() if v is not None}
        return {k: v for k, v in data.items() if v is not None}

    @model_validator(mode="after")
    def _unique(self) -> ProfileSpecModel:
        if len(set(self.boot)) != len(self.boot):
            raise ValueError(f"boot {self.boot} names a device twice: list each once")
        if "network" in self.boot and not self.nics:
            raise ValueError("boot 'network' needs a NIC: add one to nics, or drop it from boot")
        _no_repeats("mac", [n.mac for n in self.nics])
        _no_repeats("ip", [n.ip for n in self.nics])
        _no_repeats("WWN", [w for h in self.hbas for w in (h.wwpn, h.wwnn)])
        _no_repeats("volume", [lun.volume for h in self.hbas for lun in h.luns])
        return self


def wear_qos(guest_spec: dict[str, Any], profile_qos: dict[str, Any] | None) -> dict[str, Any]:
    """The wearer's spec under its profile's QoS class: the class's reservations become
    its request, its limits and shares its ``qos``; a Guest with a ``qos`` of its own
    keeps it. Raises ``ValueError`` when a limit of the class is below the request."""
    if not profile_qos or guest_spec.get("qos"):
        return guest_spec
    qos = QosModel.model_validate(profile_qos)
    request = merge_reservations(guest_spec.get("request", {}), set(), qos)
    out = {**guest_spec, "request": request}
    kept = stored_qos(qos)
    if kept:
        out["qos"] = kept
    return out


def _no_repeats(what: str, values: list[str | None]) -> None:
    seen: set[str] = set()
    for value in values:
        if value is None:
            continue
        if value in seen:
            raise ValueError(f"{what} {value} is given twice: give each its own")
        seen.add(value)


def lun_serial(profile: str, volume: str) -> str:
    """The LUN's SCSI serial: ``pd-<profile>-<volume>``, hashed past QEMU's 36 characters."""
    serial = f"pd-{profile}-{volume}"
    if len(serial) <= 36:  # scsi-hd refuses a longer serial
        return serial
    return "pd-" + hashlib.sha256(f"{profile}/{volume}".encode()).hexdigest()[:33]
