"""The ``podium plan`` instance (DESIGN.md "Placement instance format") as arrays.

Parsing a million guests one object at a time is the slow part of planning, so the
common case reads each field with one list comprehension and checks values with
numpy; only when that fails does a slow pass walk the entries to say exactly which
field of which entry is wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from podium.model import DIMENSIONS
from podium.scheduler._table import Floats, HostRow, HostTable, Ints

SPREADS = ("host", "rack", "site")  # codes 1, 2, 3 (0: no spread)
FORMAT_HINT = (
    'expected {"hosts": [{"name": "h1", "capacity": {"cpu": 32, "memory_mib": 131072, '
    '"iops": 20000, "net_mbps": 10000}, "labels": {"rack": "r1", "site": "s1"}}], '
    '"guests": [{"name": "web-1", "app": "web", "request": {"cpu": 2, ...}, "spread": "rack"}]}'
)


class InstanceError(ValueError):
    """A malformed instance; the message names the entry and field, and the fix."""


@dataclass(frozen=True, eq=False)
class Instance:
    """Hosts as a :class:`HostTable`; guests as parallel arrays (row ``i``: guest ``i``).

    ``app`` codes index ``app_names`` (``-1``: no app); ``spread`` is 0 (none), 1 host,
    2 rack, 3 site; ``priority`` orders placement (higher first).
    """

    hosts: HostTable
    guest_names: list[str]
    requests: Floats
    app: Ints
    app_names: list[str]
    spread: Ints
    priority: Ints

    def __len__(self) -> int:
        return len(self.guest_names)


def parse_instance(data: Any) -> Instance:
    """An :class:`Instance` from a decoded JSON document; raises :class:`InstanceError`."""
    if not isinstance(data, Mapping):
        raise InstanceError(
            f"the instance is a {type(data).__name__}, not an object; {FORMAT_HINT}"
        )
    for key in ("hosts", "guests"):
        if not isinstance(data.get(key), list):
            raise InstanceError(f'"{key}" is missing or not a list; {FORMAT_HINT}')
    try:
        return _fast(data["hosts"], data["guests"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        _slow(data["hosts"], data["guests"])  # raises with the exact entry and field
        raise InstanceError(f"bad placement instance ({err}); {FORMAT_HINT}") from err


def _fast(hosts: list[Any], guests: list[Any]) -> Instance:
    rows = [
        HostRow(
            name=str(h["name"]),
            capacity=_resources(h["capacity"]),
            labels={str(k): str(v) for k, v in h.get("labels", {}).items()},
        )
        for h in hosts
    ]
    if len({r.name for r in rows}) != len(rows):
        _slow(hosts, guests)
    names = [g["name"] for g in guests]
    requests = [g["request"] for g in guests]
    if set().union(*map(dict.keys, requests)) - set(DIMENSIONS) or len(set(names)) != len(names):
        _slow(hosts, guests)
    zeros = (0,) * len(DIMENSIONS)
    matrix = np.array(
        [tuple(map(r.get, DIMENSIONS, zeros)) for r in requests], dtype=np.float64
    ).reshape(len(guests), len(DIMENSIONS))
    if not (np.isfinite(matrix).all() and (matrix >= 0).all()):
        _slow(hosts, guests)
    app_codes: dict[str, int] = {}
    apps = [g.get("app") for g in guests]
    app = np.array([-1 if a is None else app_codes.setdefault(a, len(app_codes)) for a in apps])
    lookup = {None: 0, "host": 1, "rack": 2, "site": 3}
    spread = np.array([lookup[g.get("spread")] for g in guests], dtype=np.int64)
    if ((spread > 0) & (app < 0)).any() or not all(isinstance(a, str) for a in app_codes):
        _slow(hosts, guests)
    priority = np.array([g.get("priority", 0) for g in guests], dtype=np.int64)
    return Instance(
        hosts=HostTable.build(rows),
        guest_names=[str(n) for n in names],
        requests=matrix,
        app=app.astype(np.int64),
        app_names=list(app_codes),
        spread=spread,
        priority=priority,
    )


def _resources(value: Any) -> Any:
    from podium.model import Resources  # noqa: PLC0415  (local: keeps the fast path flat)

    if not isinstance(value, Mapping) or set(value) - set(DIMENSIONS):
        raise ValueError("capacity")
    return Resources.from_dict(dict(value))


def _slow(hosts: Sequence[Any], guests: Sequence[Any]) -> None:
    """Walk every entry; raise :class:`InstanceError` at the first bad field."""
    seen: set[str] = set()
    for i, host in enumerate(hosts):
        where = f"hosts[{i}]"
        _name(host, where, seen, "host")
        _vector(host.get("capacity"), f"{where}.capacity", required=True)
        labels = host.get("labels", {})
        if not isinstance(labels, Mapping):
            raise InstanceError(f'{where}.labels: expected an object like {{"rack": "r1"}}')
    seen = set()
    for i, guest in enumerate(guests):
        where = f"guests[{i}]"
        _name(guest, where, seen, "guest")
        _vector(guest.get("request"), f"{where}.request", required=True)
        app = guest.get("app")
        if app is not None and not isinstance(app, str):
            raise InstanceError(f"{where}.app: expected a string (the app's name), got {app!r}")
        spread = guest.get("spread")
        if spread is not None and spread not in SPREADS:
            raise InstanceError(f"{where}.spread: {spread!r} is not one of host, rack, site")
        if spread is not None and app is None:
            raise InstanceError(
                f'{where}.spread: a spread applies among guests of one app; add "app"'
            )
        priority = guest.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InstanceError(f"{where}.priority: expected an integer, got {priority!r}")


def _name(entry: Any, where: str, seen: set[str], kind: str) -> None:
    if not isinstance(entry, Mapping):
        raise InstanceError(f"{where}: expected an object, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InstanceError(f'{where}.name: missing or not a string; give each {kind} a "name"')
    if name in seen:
        raise InstanceError(f"{where}.name: {kind} {name!r} appears twice; names must be unique")
    seen.add(name)


def _vector(value: Any, where: str, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, Mapping):
        raise InstanceError(
            f"{where}: missing or not an object; expected e.g. "
            '{"cpu": 2, "memory_mib": 4096, "iops": 500, "net_mbps": 100}'
        )
    for key, number in value.items():
        if key not in DIMENSIONS:
            raise InstanceError(f"{where}.{key}: unknown dimension; use {', '.join(DIMENSIONS)}")
        ok = isinstance(number, int | float) and not isinstance(number, bool)
        if not ok or not math.isfinite(number) or number < 0:
            raise InstanceError(f"{where}.{key}: expected a number >= 0, got {number!r}")
