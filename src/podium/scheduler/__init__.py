"""Scheduler: where guests go.

::

    PlacementRequest(HostTable snapshot, guests, replicas already placed)
        │
        ▼  for each guest: priority; then moving, spread, bigger first; then name
    ┌─────────┐   ┌───────┐   ┌────────┐        ┌───────────┐   ┌─────────────────────┐
    │ ready   │──>│ fit   │──>│ spread │─mask──>│ best-fit  │──>│ tie-break:          │
    │ filter  │   │ filter│   │ filter │        │ score     │   │ hash(guest, host)   │
    └─────────┘   └───────┘   └────────┘        └───────────┘   └─────────────────────┘
        │ no host left                                              │ commit: consume the
        ▼                                                           ▼ host's capacity in the batch
    unplaced[guest] = "0/8 hosts fit: 5 lacked memory_mib,      placements[guest] = host
                       3 already hold a replica of app web (spread host)"

Vocabulary:

- *HostTable*: struct-of-arrays snapshot of the hosts: names, capacity and allocated
  ``(n, 4)`` float64 over ``cpu, memory_mib, iops, net_mbps``, ready/cordoned masks,
  rack/site label codes as ints.
- *filter* plugin: a boolean mask over hosts (a hard constraint); the framework counts
  the hosts each filter rejected, so "why not placed" is answered in one line.
- *score* plugin: 0..100 per candidate host (a preference), weighted and summed.
- *batch*: one ``place`` call; capacity is consumed virtually as guests are placed,
  so one pass can place thousands of guests without store round-trips between them.

Live migrations (``MigrationPlanner``) run the same pipeline over every host but the
guest's own, from the API's host and guest views.

The scheduler is pure (no I/O). The placement controller (``podium.controller``)
builds the table from the store, calls ``place``, and binds the results.
Later work: equivalence-class caching and fully vectorised batches.
"""

from podium.scheduler._check import solve_instance, verify
from podium.scheduler._framework import FrameworkScheduler, Scheduler, default_scheduler
from podium.scheduler._migration import MigrationPlanner
from podium.scheduler._plugins import (
    BatchState,
    BestFitScore,
    FilterPlugin,
    FitFilter,
    ReadyFilter,
    ScorePlugin,
    SpreadFilter,
)
from podium.scheduler._table import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
)

__all__ = [
    "BatchState",
    "BestFitScore",
    "FilterPlugin",
    "FitFilter",
    "FrameworkScheduler",
    "GuestRequest",
    "HostRow",
    "HostTable",
    "MigrationPlanner",
    "PlacementRequest",
    "PlacementResult",
    "ReadyFilter",
    "Scheduler",
    "ScorePlugin",
    "SpreadFilter",
    "default_scheduler",
    "solve_instance",
    "verify",
]
