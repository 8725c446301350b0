"""Manifest schemas (the YAML users write) and their validation.

Pydantic lives here, at the edge; the rest of the model is plain dataclasses.
Errors name the file, the document (1-based), the field, and what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from podium.model._types import AppSpec, GuestSpec, Kind, Resources, Spread

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_HINT = "lowercase letters, digits and '-', 1-63 characters, starting and ending alphanumeric"
APPLYABLE = (Kind.APP.value, Kind.GUEST.value)


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


class AppSpecModel(_Strict):
    replicas: Annotated[int, Field(ge=0, le=100_000)]
    image: str = "tiny"
    request: RequestModel = RequestModel()
    spread: Spread | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 0

    def to_spec(self) -> AppSpec:
        return AppSpec(
            self.replicas, self.image, self.request.to_resources(), self.spread, self.priority
        )


class GuestSpecModel(_Strict):
    image: str = "tiny"
    request: RequestModel = RequestModel()
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    running: bool = True

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
    model: type[AppDoc] | type[GuestDoc]
    if kind == Kind.APP.value:
        model = AppDoc
    elif kind == Kind.GUEST.value:
        model = GuestDoc
    elif kind is None:
        raise ManifestError(
            f"field 'kind' is required: one of {', '.join(APPLYABLE)}",
            source=source,
            document=document,
        )
    else:
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
    return Manifest(Kind(parsed.kind), parsed.name, parsed.spec.model_dump(mode="json"))


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
