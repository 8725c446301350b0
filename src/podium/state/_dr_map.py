"""The DR map file: where a site's networks and addresses go on the other site.

::

    networks:      {front: front-b}          failover/failback: production network -> the
                                             other site's (unmapped networks stay)
    ips:           {10.10.0.10: 10.30.0.10}  fixed re-addressing (default: keep the IP if
                                             the new network's pool has it free, else a
                                             free one from that pool)
    test_networks: {front: front-drill}      dr test: the isolated networks drill copies use

:class:`DrMapModel` checks the shape (names, addresses) at the edge; :func:`check_map`
checks against the store that every network it names exists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from podium.model import Kind
from podium.model.manifest import NAME_HINT, NAME_RE, SITE_HINT, SITE_RE
from podium.state import _cluster

MAX_ENTRIES = 4096  # per section: a site's networks and fixed addresses, not a fleet


def _names(values: Mapping[str, str], what: str) -> dict[str, str]:
    for old, new in values.items():
        for name in (old, new):
            if not NAME_RE.match(name):
                raise ValueError(f"{what}: {name!r} is not a network name: use {NAME_HINT}")
        if old == new:
            raise ValueError(f"{what}: {old!r} maps to itself: leave it out (unmapped stay)")
    return dict(values)


class DrMapModel(BaseModel):
    """A DR map file, as parsed from YAML or sent in a request body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    networks: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, examples=[{"front": "front-b"}]
    )
    ips: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, examples=[{"10.10.0.10": "10.30.0.10"}]
    )
    test_networks: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, examples=[{"front": "front-drill"}]
    )

    @field_validator("networks")
    @classmethod
    def _networks(cls, values: dict[str, str]) -> dict[str, str]:
        return _names(values, "networks")

    @field_validator("test_networks")
    @classmethod
    def _test_networks(cls, values: dict[str, str]) -> dict[str, str]:
        return _names(values, "test_networks")

    @field_validator("ips")
    @classmethod
    def _ips(cls, values: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for old, new in values.items():
            try:
                a, b = ipaddress.ip_address(old), ipaddress.ip_address(new)
            except ValueError as err:
                raise ValueError(
                    f"ips: {old!r} -> {new!r}: {err}; write plain addresses, e.g. "
                    "10.10.0.10: 10.30.0.10 (no prefix length)"
                ) from None
            if a.version != b.version:
                raise ValueError(f"ips: {old} -> {new} changes the IP version: map v4 to v4")
            out[str(a)] = str(b)
        if len(set(out.values())) != len(out):
            raise ValueError("ips: two addresses map to the same new one: give each its own")
        return out


def parse_map(raw: Any) -> DrMapModel:
    """A map from parsed YAML/JSON (``None``: empty). Raises ``ValueError`` (one line)."""
    if raw is None:
        return DrMapModel()
    try:
        return DrMapModel.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        if not where:
            raise ValueError(
                "a DR map is a mapping with networks, ips and test_networks (see "
                "examples/dr/map.yaml)"
            ) from None
        raise ValueError(f"DR map {where}: {first.get('msg', 'is invalid')}") from None


def check_site(site: str, what: str) -> None:
    """Refuse a site name no host label can have (``Conflict``)."""
    if not SITE_RE.match(site):
        raise _cluster.Conflict(f"{what} {site!r} is not a site name: use {SITE_HINT}")


def inverse(mapping: Mapping[str, str], what: str) -> dict[str, str]:
    """``mapping`` read backwards (failback). Raises ``Conflict`` if two keys share a value."""
    out: dict[str, str] = {}
    for old, new in mapping.items():
        if new in out:
            raise _cluster.Conflict(
                f"DR map {what}: {out[new]!r} and {old!r} both map to {new!r}, so failing back "
                f"cannot tell where {new!r} returns to: give each its own"
            )
        out[new] = old
    return out


async def check_map(state: _cluster.ClusterState, dr_map: DrMapModel, *, test: bool) -> None:
    """Every network the map sends NICs to exists (``Conflict`` naming the first missing);
    ``test``: ``test_networks`` is required."""
    if test and not dr_map.test_networks:
        raise _cluster.Conflict(
            "dr test needs test_networks in the map: the isolated network each production "
            "network's drill copies use, e.g. test_networks: {front: front-drill}"
        )
    sections = {"networks": dr_map.networks}
    if test:
        sections = {"test_networks": dr_map.test_networks}
    for section, mapping in sections.items():
        for old, new in sorted(mapping.items()):
            if await state.get_record(Kind.NETWORK, new) is None:
                raise _cluster.Conflict(
                    f"DR map {section}: {old} -> {new!r}, which does not exist: apply Network "
                    f"{new!r} first (with its own ip_pool), or fix the map"
                )
