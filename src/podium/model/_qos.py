"""Per-app QoS (reservation, limit, shares per dimension) and placement constraints.

Manifest form (App and Guest specs)::

    request: {cpu: 1, memory_mib: 256, iops: 100, net_mbps: 10}   # the reservations
    qos:                                                           # optional, per dimension
      iops: {reservation: 100, limit: 500, shares: 200}
      net_mbps: {limit: 50}
      cpu: {limit: 2, shares: 400}
    near: [db]               # hard: only hosts that already run a guest of app db
    talks_to: [db, cache]    # soft: prefer hosts near these apps (their traffic stays local)
    tolerations: [gpu, dedicated=batch]   # may use hosts tainted gpu=*, dedicated=batch

- *reservation*: guaranteed; placement never overcommits reservations. It is the
  ``request`` of that dimension (``qos.X.reservation`` sets it; saying both, differently,
  is an error).
- *limit*: a ceiling the host enforces (QEMU block throttling for iops, tc on the tap
  for net_mbps, CPU quota for cpu); absent means unlimited. Never below the reservation.
- *shares*: relative weight under contention (default :data:`DEFAULT_SHARES`).

The stored spec keeps ``request`` (reservations) and ``qos`` with only ``limit`` and
``shares`` per dimension; :func:`limits_of` and :func:`shares_of` read them back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from podium.model._types import DIMENSIONS

DEFAULT_SHARES = 100
MAX_SHARES = 10_000
MAX_CONSTRAINTS = 16
TOLERATION_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?(=[-A-Za-z0-9_.]{1,63})?$")
TOLERATION_HINT = "KEY or KEY=VALUE (KEY: lowercase letters, digits, '-', '_', '.')"


class QosDimModel(BaseModel):
    """One dimension's QoS. Every field optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reservation: Annotated[float, Field(ge=0)] | None = None
    limit: Annotated[float, Field(gt=0)] | None = None
    shares: Annotated[int, Field(ge=1, le=MAX_SHARES)] | None = None


class QosModel(BaseModel):
    """QoS per dimension (:data:`podium.model.DIMENSIONS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: QosDimModel | None = None
    memory_mib: QosDimModel | None = None
    iops: QosDimModel | None = None
    net_mbps: QosDimModel | None = None

    def dims(self) -> dict[str, QosDimModel]:
        return {d: q for d in DIMENSIONS if (q := getattr(self, d)) is not None}


def merge_reservations(
    request: Mapping[str, Any], explicit: set[str], qos: QosModel | None
) -> dict[str, Any]:
    """``request`` with each ``qos.X.reservation`` folded in. Raises ``ValueError``.

    ``explicit``: the request fields the user wrote (a default may be overridden).
    Checks that every limit covers the (merged) reservation.
    """
    merged = dict(request)
    if qos is None:
        return merged
    for dim, q in qos.dims().items():
        if q.reservation is not None:
            if dim in explicit and float(merged[dim]) != q.reservation:
                raise ValueError(
                    f"request.{dim} is {merged[dim]:g} but qos.{dim}.reservation is "
                    f"{q.reservation:g}: give the reservation once"
                )
            merged[dim] = q.reservation if dim == "cpu" else int(q.reservation)
        if q.limit is not None and q.limit < float(merged[dim]):
            raise ValueError(
                f"qos.{dim}.limit {q.limit:g} is below the reservation {float(merged[dim]):g} "
                f"(request.{dim}): a limit must leave room for what is guaranteed"
            )
    return merged


def stored_qos(qos: QosModel | None) -> dict[str, dict[str, float | int]]:
    """The ``qos`` kept in a stored spec: ``{dim: {"limit"?, "shares"?}}`` (no reservations)."""
    if qos is None:
        return {}
    out: dict[str, dict[str, float | int]] = {}
    for dim, q in qos.dims().items():
        entry: dict[str, float | int] = {}
        if q.limit is not None:
            entry["limit"] = q.limit
        if q.shares is not None:
            entry["shares"] = q.shares
        if entry:
            out[dim] = entry
    return out


def limits_of(spec: Mapping[str, Any]) -> dict[str, float]:
    """The limits of a stored guest spec, by dimension (only those set)."""
    qos = spec.get("qos") or {}
    return {d: float(qos[d]["limit"]) for d in DIMENSIONS if "limit" in (qos.get(d) or {})}


def shares_of(spec: Mapping[str, Any]) -> dict[str, int]:
    """The shares of a stored guest spec, every dimension (default :data:`DEFAULT_SHARES`)."""
    qos = spec.get("qos") or {}
    return {d: int((qos.get(d) or {}).get("shares", DEFAULT_SHARES)) for d in DIMENSIONS}


def check_names(values: list[str], what: str, pattern: re.Pattern[str], hint: str) -> list[str]:
    """Validate a short list of names (``near``, ``talks_to``, ``tolerations``)."""
    if len(values) > MAX_CONSTRAINTS:
        raise ValueError(f"lists {len(values)} entries; at most {MAX_CONSTRAINTS}")
    for value in values:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a valid {what}: use {hint}")
    if len(set(values)) != len(values):
        raise ValueError("lists an entry twice")
    return values


def toleration_matches(toleration: str, key: str, value: str) -> bool:
    """``gpu`` tolerates taint ``gpu=<anything>``; ``gpu=a100`` only ``gpu=a100``."""
    tkey, sep, tvalue = toleration.partition("=")
    return tkey == key and (not sep or tvalue == value)
