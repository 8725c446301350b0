"""Domain types: what podium manages. Imports nothing else of podium.

::

    App ──owns──> Guest ──bound by──> Binding(host, epoch) ──> Host
                    │                                          │
                    └──── GuestStatus (reported by the agent)  └── HostStatus (lease, state)

Vocabulary: a *request* is the per-guest resource vector (cpu, memory_mib, iops,
net_mbps); *spread* names the failure domain replicas of one app never share; an
*epoch* is the fencing token of a binding, and only grows.
"""

from podium.model._types import (
    DIMENSIONS,
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
    "DIMENSIONS",
    "KINDS",
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
    "Resources",
    "Spread",
    "parse_manifest_text",
    "validate_document",
]
