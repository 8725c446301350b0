"""Profile clones: N new profiles with fresh addresses from the same pools, and their guests.

::

    podium profile clone db --count 3 --spread rack
      plan_clone(state, "db", 3)  ──>  Profile db-1..3  (spec of db, fixed addresses dropped)
                                       Guest   db-1..3  (spec of db's guest, profile db-K,
                                                         app "db", spread rack)
      the route applies them in transactions of whole (profile, guest) pairs

Vocabulary: the *source* is the profile cloned; its *wearer* is the guest that uses it
(if any). A clone's addresses always come from pools: a source NIC or HBA with a fixed
(imported) address and no pool cannot be cloned, and the plan says which and how to fix
it. Clones are named ``<source>-<k>`` with the smallest ``k`` free for both a profile
and a guest, so clones of clones and re-runs never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podium.model import Kind, Manifest, ManifestError, Spread, validate_document
from podium.state import _cluster, keys

JSON = dict[str, Any]
MAX_CLONES = 1000  # per request: a cluster, not a fleet; bounded work per call


@dataclass(frozen=True, slots=True)
class ClonePair:
    """One clone: its profile manifest and, when the source has a wearer, its guest's."""

    profile: Manifest
    guest: Manifest | None

    @property
    def manifests(self) -> list[Manifest]:
        return [self.profile] if self.guest is None else [self.profile, self.guest]


@dataclass(frozen=True, slots=True)
class ClonePlan:
    source: str
    wearer: str | None
    pairs: list[ClonePair] = field(default_factory=list)


def clone_spec(source: str, spec: JSON) -> JSON:
    """The source profile's spec with its fixed addresses dropped (pools give new ones).

    Raises :class:`~podium.state.Conflict` for an address that no pool can replace.
    """
    nics = []
    for i, nic in enumerate(spec.get("nics", [])):
        fresh = {k: v for k, v in nic.items() if k not in ("mac", "ip")}
        if "mac_pool" not in nic:
            raise _cluster.Conflict(
                f"Profile {source!r}: nics[{i}] has a fixed MAC and no mac_pool, so a clone "
                "cannot get its own: give the NIC a mac_pool"
            )
        nics.append(fresh)
    hbas = []
    for i, hba in enumerate(spec.get("hbas", [])):
        if "wwn_pool" not in hba:
            raise _cluster.Conflict(
                f"Profile {source!r}: hbas[{i}] has fixed WWNs and no wwn_pool, so a clone "
                "cannot get its own: give the HBA a wwn_pool"
            )
        hbas.append({k: v for k, v in hba.items() if k not in ("wwpn", "wwnn")})
    out = dict(spec)
    if nics or "nics" in spec:
        out["nics"] = nics
    if hbas or "hbas" in spec:
        out["hbas"] = hbas
    return out


def _guest_spec(wearer: JSON, profile: str, group: str, spread: Spread | None) -> JSON:
    spec = {k: v for k, v in wearer["spec"].items() if k not in ("restore_from",)}
    spec["profile"] = profile
    spec["app"] = spec.get("app") or group
    if spread is not None:
        spec["spread"] = spread.value
    return spec


def _validated(kind: Kind, name: str, spec: JSON, what: str) -> Manifest:
    try:
        return validate_document({"kind": kind.value, "name": name, "spec": spec}, source=what)
    except ManifestError as err:  # a source stored by an older version, say
        raise _cluster.Conflict(f"cannot clone: {err}") from err


async def plan_clone(
    state: _cluster.ClusterState, source: str, count: int, *, spread: Spread | None = None
) -> ClonePlan:
    """Decide the names and specs of ``count`` clones of profile ``source``.

    Raises :class:`~podium.state.NotFound` or :class:`~podium.state.Conflict`.
    """
    if not 1 <= count <= MAX_CLONES:
        raise _cluster.Conflict(f"count {count} is out of range: clone 1..{MAX_CLONES} at a time")
    record = await state.get_record(Kind.PROFILE, source)
    if record is None:
        raise _cluster.NotFound(f"Profile {source!r} not found")
    spec = clone_spec(source, record["spec"])
    use, _ = await state._get_json(keys.profile_use_key(source))
    wearer = None
    if use is not None:
        wearer = await state.get_record(Kind.GUEST, str(use["guest"]))
    profiles = {r["name"] for r in (await state.list_records(Kind.PROFILE))[0]}
    guests = {r["name"] for r in (await state.list_records(Kind.GUEST))[0]}
    pairs: list[ClonePair] = []
    k = 0
    while len(pairs) < count:
        k += 1
        name = f"{source}-{k}"
        if name in profiles or name in guests or len(name) > 63:
            if len(name) > 63:
                raise _cluster.Conflict(
                    f"clone names of {source!r} grow past 63 characters: clone a profile "
                    "with a shorter name"
                )
            continue
        profile = _validated(Kind.PROFILE, name, spec, f"clone of Profile {source}")
        guest = None
        if wearer is not None:
            gspec = _guest_spec(wearer, name, source, spread)
            guest = _validated(Kind.GUEST, name, gspec, f"clone of Guest {wearer['name']}")
        pairs.append(ClonePair(profile, guest))
    return ClonePlan(source, wearer["name"] if wearer else None, pairs)
