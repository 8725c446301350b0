"""Scheduler: where guests go.

::

    PlacementRequest(HostTable snapshot, guests, replicas already placed, traffic)
        │
        ▼  for each guest: priority; then moving, no near, spread, bigger first; name
    filters (masks, cheap first)                        scores (0..100, weighted sum)
    ┌────────────┐ ┌────────┐ ┌─────┐ ┌────────┐ ┌──────┐      ┌──────────────────────┐
    │ host state │>│ taints │>│ fit │>│ spread │>│ near │─mask>│ best-fit 1, spread .5│
    │ ready,     │ │ (n, T) │ │ 4   │ │ host/  │ │ app  │      │ traffic 1, health .5 │
    │ cordoned,  │ │ codes  │ │ dims│ │ rack/  │ │ on   │      └──────────┬───────────┘
    │ draining,  │ └────────┘ └─────┘ │ site   │ │ host │                 ▼ best; ties:
    │ unhealthy  │                    └────────┘ └──────┘      hash(guest, host)
    └────────────┘                                                       │ commit: consume
        │ no host left                                                   ▼ virtually
    unplaced[guest] = "0/15 hosts fit: 12 lacked iops,          placements[guest] = host
                       3 already hold a replica of app web (spread host)"

Vocabulary:

- *HostTable*: struct-of-arrays snapshot of the hosts: names, capacity and allocated
  ``(n, 4)`` float64 over ``cpu, memory_mib, iops, net_mbps``, ready/cordoned/draining
  masks, health risk, rack/site label codes as ints, taints as an ``(n, T)`` bool matrix.
- *filter* plugin: a boolean mask over hosts (a hard constraint); the framework counts
  the hosts each filter rejected, so "why not placed" is answered in one line.
- *score* plugin: 0..100 per candidate host (a preference), weighted and summed.
- *batch*: one ``place`` call; capacity is consumed virtually as guests are placed,
  so one pass can place thousands of guests without store round-trips between them.
- *taint* / *toleration*: a tainted host (``gpu=a100``) takes only guests tolerating
  every one of its taints (``gpu`` or ``gpu=a100``).
- *near*: a hard affinity: only hosts already running a guest of one of these apps.
- *traffic affinity*: measured bytes/s between guests (and declared ``talks_to``) pull
  a guest toward the hosts of the guests it talks to.

Live migrations (``MigrationPlanner``) run the same pipeline over every host but the
guest's own, from the API's host and guest views.

The scheduler is pure (no I/O). The placement controller (``podium.controller``)
builds the table from the store, calls ``place``, and binds the results.
The offline planner (``podium plan``: ``_planner``, ``_pack``, ``_small``) places whole
equivalence classes of identical guests at once and is checked by ``verify``; the
rebalancer (``_rebalance``) proposes live migrations over the same filters.
"""

from podium.scheduler._check import solve_instance, verify
from podium.scheduler._constraints import NearFilter, SiteFilter, TaintFilter
from podium.scheduler._framework import FrameworkScheduler, Scheduler, default_scheduler
from podium.scheduler._migration import MigrationPlanner
from podium.scheduler._plugins import (
    UNHEALTHY_RISK,
    BatchState,
    BestFitScore,
    FilterPlugin,
    FitFilter,
    HostStateFilter,
    ReadyFilter,
    ScorePlugin,
    SpreadFilter,
)
from podium.scheduler._scores import HealthScore, SpreadScore, TrafficIndex, TrafficScore
from podium.scheduler._table import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
)

__all__ = [
    "UNHEALTHY_RISK",
    "BatchState",
    "BestFitScore",
    "FilterPlugin",
    "FitFilter",
    "FrameworkScheduler",
    "GuestRequest",
    "HealthScore",
    "HostRow",
    "HostStateFilter",
    "HostTable",
    "MigrationPlanner",
    "NearFilter",
    "PlacementRequest",
    "PlacementResult",
    "ReadyFilter",
    "Scheduler",
    "ScorePlugin",
    "SiteFilter",
    "SpreadFilter",
    "SpreadScore",
    "TaintFilter",
    "TrafficIndex",
    "TrafficScore",
    "default_scheduler",
    "solve_instance",
    "verify",
]
