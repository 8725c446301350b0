"""Manifest schemas (the YAML users write) and their validation.

Pydantic lives here, at the edge; the rest of the model is plain dataclasses.
Errors name the file, the document (1-based), the field, and what is expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from podium.model import _profiles
from podium.model._profiles import (
    NetworkSpecModel,
    PoolSpecModel,
    ProfileSpecModel,
)
from podium.model._qos import (
    TOLERATION_HINT,
    TOLERATION_RE,
    QosModel,
    check_names,
    merge_reservations,
    stored_qos,
)
from podium.model._types import AppSpec, GuestSpec, Kind, Resources, Spread

NAME_RE = _profiles.NAME_RE
NAME_HINT = _profiles.NAME_HINT
APPLYABLE = tuple(k.value for k in (Kind.APP, Kind.GUEST, Kind.POOL, Kind.NETWORK, Kind.PROFILE))


class ManifestError(ValueError):
    """A manifest that cannot be applied; ``str()`` is a one-line, fix-it message."""

    def __init__(self, message: str, *, source: str = "", document: int = 0) -> None:
        where = source
        if document:
            where = f"{where}: document {document}" if where else f"document {document}"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.document = document


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestModel(_Strict):
    """Per-guest resource request."""

    cpu: Annotated[float, Field(gt=0, le=1024)] = 1
    memory_mib: Annotated[int, Field(ge=16, le=16 * 1024 * 1024)] = 128
    iops: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    net_mbps: Annotated[int, Field(ge=0, le=1_000_000)] = 0

    def to_resources(self) -> Resources:
        return Resources(self.cpu, self.memory_mib, self.iops, self.net_mbps)


SITE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
SITE_HINT = "a host label value: letters, digits, '-', '_' or '.', e.g. s1 or paris-1"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAC_HINT = "six lowercase hex pairs joined by ':', e.g. 52:54:00:12:34:56"
MAX_NICS = 8
MAX_DISK_GIB = 16384
Workload = Literal["idle", "disk-writer"]


def check_mac(value: str) -> str:
    """A unicast MAC in podium's spelling (``52:54:00:0a:0b:0c``). Raises ``ValueError``."""
    if not MAC_RE.match(value):
        raise ValueError(f"{value!r} is not a MAC address: use {MAC_HINT}")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC: the first octet must be even")
    if value == "00:00:00:00:00:00":
        raise ValueError(f"{value!r} is not a usable MAC: use {MAC_HINT}")
    return value


def check_ip(value: str) -> str:
    """``ADDR`` or ``ADDR/PREFIX`` of one interface, normalised. Raises ``ValueError``."""
    hint = "use ADDR or ADDR/PREFIX, e.g. 10.0.0.5 or 10.0.0.5/24"
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address: {hint}") from None
    addr = iface.ip
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise ValueError(f"{value!r} cannot be an interface's address: {hint}")
    return str(iface) if "/" in value else str(addr)


class NicModel(_Strict):
    """One guest NIC: a fixed MAC and/or IP, or nothing (podium allocates them)."""

    mac: str | None = None
    ip: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else check_mac(value)

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else check_ip(value)

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


Nics = list[NicModel]
DiskGib = Annotated[float, Field(gt=0, le=MAX_DISK_GIB)]


def _default_nics() -> list[NicModel]:
    return [NicModel()]


def _check_nics(nics: list[NicModel]) -> list[NicModel]:
    if len(nics) > MAX_NICS:
        raise ValueError(f"has {len(nics)} NICs; a guest has at most {MAX_NICS}")
    for attr in ("mac", "ip"):
        seen: set[str] = set()
        for nic in nics:
            value = getattr(nic, attr)
            if value is None:
                continue
            addr = value.split("/")[0]
            if addr in seen:
                raise ValueError(f"{attr} {addr} is given to two NICs; give each NIC its own")
            seen.add(addr)
    return nics


class _Placed(_Strict):
    """What App and Guest specs share: the request, its QoS, placement constraints."""

    request: RequestModel = RequestModel()
    qos: QosModel | None = None
    near: list[str] = Field(default_factory=list)
    talks_to: list[str] = Field(default_factory=list)
    tolerations: list[str] = Field(default_factory=list)
    # Only hosts whose ``site`` label is this (a site's guests use its storage; podium dr
    # moves them to another site).
    site: str | None = None

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        if value is not None and not SITE_RE.match(value):
            raise ValueError(f"{value!r} is not a site name: use {SITE_HINT}")
        return value

    @field_validator("near", "talks_to")
    @classmethod
    def _apps(cls, values: list[str]) -> list[str]:
        return check_names(values, "app name", NAME_RE, NAME_HINT)

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, values: list[str]) -> list[str]:
        return check_names(values, "toleration", TOLERATION_RE, TOLERATION_HINT)

    @model_validator(mode="after")
    def _fold_reservations(self) -> _Placed:
        explicit = set(self.request.model_fields_set)
        merged = merge_reservations(self.request.model_dump(), explicit, self.qos)
        if merged != self.request.model_dump():
            object.__setattr__(self, "request", RequestModel(**merged))
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The stored spec: qos as limits and shares only; empty constraint lists left out."""
        data: dict[str, Any] = handler(self)
        qos = stored_qos(self.qos)
        if qos:
            data["qos"] = qos
        else:
            data.pop("qos", None)
        for key in ("near", "talks_to", "tolerations", "site"):
            if not data.get(key):
                data.pop(key, None)
        return data


class AppSpecModel(_Placed):
    replicas: Annotated[int, Field(ge=0, le=100_000)]
    image: str = "tiny"
    spread: Spread | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    nics: Nics = Field(default_factory=_default_nics)
    disk_gib: DiskGib = 1
    workload: Workload = "idle"

    @field_validator("nics")
    @classmethod
    def _nics(cls, nics: list[NicModel]) -> list[NicModel]:
        for nic in nics:
            if nic.mac is not None or nic.ip is not None:
                raise ValueError(
                    "replicas of an App cannot share a fixed MAC or IP: leave mac and ip out "
                    "(podium allocates them), or declare single Guests"
                )
        return _check_nics(nics)

    def to_spec(self) -> AppSpec:
        return AppSpec(
            self.replicas, self.image, self.request.to_resources(), self.spread, self.priority
        )


class GuestSpecModel(_Placed):
    image: str = "tiny"
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    running: bool = True
    nics: Nics = Field(default_factory=_default_nics)
    disk_gib: DiskGib = 1
    workload: Workload = "idle"
    profile: str | None = None  # wear this Profile's identity (its NICs, HBAs, boot order)
    # A group for spread and affinity, as an App's replicas have (profile clones use it);
    # it grants an App's token nothing: those act only on the guests their App owns.
    app: str | None = None
    spread: Spread | None = None  # with app: guests of the group never share this domain

    @field_validator("nics")
    @classmethod
    def _nics(cls, nics: list[NicModel]) -> list[NicModel]:
        return _check_nics(nics)

    @field_validator("profile", "app")
    @classmethod
    def _named(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid {info.field_name} name: use {NAME_HINT}")
        return value

    @model_validator(mode="after")
    def _spread_needs_group(self) -> GuestSpecModel:
        if self.spread is not None and self.app is None:
            raise ValueError(
                "spread keeps the guests of one group apart: give the guest an app (its group) "
                "too, or leave spread out"
            )
        return self

    @model_validator(mode="after")
    def _profile_owns_nics(self) -> GuestSpecModel:
        if self.profile is not None and "nics" in self.model_fields_set:
            raise ValueError(
                f"a Guest with profile {self.profile!r} wears that profile's NICs: leave nics "
                "out here and declare them in the Profile"
            )
        return self

    def stored(self) -> dict[str, Any]:
        """The stored spec: a guest that wears a profile keeps no NICs of its own."""
        data: dict[str, Any] = self.model_dump(mode="json")
        for key in ("app", "spread"):
            if data.get(key) is None:
                data.pop(key, None)
        if self.profile is None:
            data.pop("profile", None)
        else:
            data.pop("nics", None)
        return data

    def to_spec(self) -> GuestSpec:
        return GuestSpec(
            image=self.image,
            request=self.request.to_resources(),
            priority=self.priority,
            running=self.running,
        )


class _Doc(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid name: use {NAME_HINT}")
        return value


class AppDoc(_Doc):
    kind: Literal["App"]
    spec: AppSpecModel


class GuestDoc(_Doc):
    kind: Literal["Guest"]
    spec: GuestSpecModel


class PoolDoc(_Doc):
    kind: Literal["Pool"]
    spec: PoolSpecModel


class NetworkDoc(_Doc):
    kind: Literal["Network"]
    spec: NetworkSpecModel


class ProfileDoc(_Doc):
    kind: Literal["Profile"]
    spec: ProfileSpecModel


_DOCS: dict[str, type[_Doc]] = {
    Kind.APP.value: AppDoc,
    Kind.GUEST.value: GuestDoc,
    Kind.POOL.value: PoolDoc,
    Kind.NETWORK.value: NetworkDoc,
    Kind.PROFILE.value: ProfileDoc,
}


@dataclass(frozen=True, slots=True)
class Manifest:
    """One validated document: kind, name and its spec as plain JSON data."""

    kind: Kind
    name: str
    spec: dict[str, Any]


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see examples/ for every field)"
        elif e["type"] == "missing":
            msg = "is required"
        parts.append(f"field '{_field_path(e['loc'])}' {msg}")
    return "; ".join(parts)


def validate_document(doc: Any, *, source: str = "", document: int = 0) -> Manifest:
    """Validate one parsed YAML/JSON document. Raises :class:`ManifestError`."""
    if not isinstance(doc, dict):
        raise ManifestError(
            f"expected a mapping with kind, name and spec, got {type(doc).__name__}",
            source=source,
            document=document,
        )
    kind = doc.get("kind")
    model = _DOCS.get(kind) if isinstance(kind, str) else None
    if kind is None:
        raise ManifestError(
            f"field 'kind' is required: one of {', '.join(APPLYABLE)}",
            source=source,
            document=document,
        )
    if model is None:
        hint = " (hosts join with 'podium agent')" if kind == Kind.HOST.value else ""
        raise ManifestError(
            f"field 'kind': unknown kind {kind!r}; expected one of {', '.join(APPLYABLE)}{hint}",
            source=source,
            document=document,
        )
    try:
        parsed = model.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(_describe(err), source=source, document=document) from err
    spec = parsed.spec  # type: ignore[attr-defined]  # every document model has one
    stored = spec.stored() if isinstance(spec, GuestSpecModel) else spec.model_dump(mode="json")
    return Manifest(Kind(kind), parsed.name, stored)


def _documents(text: str, source: str) -> Iterator[tuple[int, Any]]:
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is not None:
                yield index, doc
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ManifestError(f"invalid YAML{where}: {problem}", source=source) from err


def parse_manifest_text(text: str, *, source: str = "<stdin>") -> list[Manifest]:
    """Parse and validate every document of a file; all or nothing.

    Raises :class:`ManifestError` for the first bad document, or if two documents
    declare the same kind and name, or if the file holds no document.
    """
    manifests: list[Manifest] = []
    seen: dict[tuple[Kind, str], int] = {}
    for index, doc in _documents(text, source):
        manifest = validate_document(doc, source=source, document=index)
        key = (manifest.kind, manifest.name)
        if key in seen:
            raise ManifestError(
                f"{manifest.kind.value} {manifest.name!r} is already declared in document "
                f"{seen[key]}; give each object a unique name",
                source=source,
                document=index,
            )
        seen[key] = index
        manifests.append(manifest)
    if not manifests:
        raise ManifestError(
            "no documents found; expected YAML with kind, name and spec", source=source
        )
    return manifests
