"""Domain types: what podium manages. Imports nothing else of podium.

::

    App ──owns──> Guest ──bound by──> Binding(host, epoch) ──> Host
                    │                                          │
                    └──── GuestStatus (reported by the agent)  └── HostStatus (lease, state)

Vocabulary: a *request* is the per-guest resource vector (cpu, memory_mib, iops,
net_mbps); *spread* names the failure domain replicas of one app never share; *qos* adds a
*limit* (a ceiling the host enforces) and *shares* (weight under contention) per
dimension to the request, which is the *reservation*; an
*epoch* is the fencing token of a binding, and only grows. A *profile* is a server
identity (NICs, HBAs, boot order) whose addresses come from *pools*; its NICs sit on
*networks* (a VLAN and an ip pool); a guest *wears* at most one profile.
"""

from podium.model._profiles import (
    PoolSpecModel,
    PoolType,
    canonical,
    format_value,
    lun_serial,
    parse_range,
    parse_value,
    wear_qos,
)
from podium.model._qos import DEFAULT_SHARES, limits_of, shares_of, toleration_matches
from podium.model._types import (
    DIMENSIONS,
    KIND_NAMES,
    KINDS,
    AppSpec,
    Binding,
    GuestSpec,
    GuestState,
    GuestStatus,
    HostName,
    HostSpec,
    HostState,
    HostStatus,
    Kind,
    Resources,
    Spread,
)
from podium.model.manifest import (
    Manifest,
    ManifestError,
    parse_manifest_text,
    validate_document,
)

__all__ = [
    "DEFAULT_SHARES",
    "DIMENSIONS",
    "KINDS",
    "KIND_NAMES",
    "AppSpec",
    "Binding",
    "GuestSpec",
    "GuestState",
    "GuestStatus",
    "HostName",
    "HostSpec",
    "HostState",
    "HostStatus",
    "Kind",
    "Manifest",
    "ManifestError",
    "PoolSpecModel",
    "PoolType",
    "Resources",
    "Spread",
    "canonical",
    "format_value",
    "limits_of",
    "lun_serial",
    "parse_manifest_text",
    "parse_range",
    "parse_value",
    "shares_of",
    "toleration_matches",
    "validate_document",
    "wear_qos",
]
