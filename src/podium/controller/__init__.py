"""Controllers: reconcile loops that converge the cluster toward what was declared.

::

     LeaderElection: leader key on a store lease; keepalive ttl/3; lost -> run() returns
                                         │
    store.watch(/podium/) ──> keys_for(event) ──> WorkQueue ──> reconcile(key)
      one watch, resumable;    cheap, no I/O      dedup; one       │ reads current state
      Compacted -> re-list                         worker per key   ▼
                                                  plan_*(desired, observed) -> actions (pure)
                                                                   │
                                                  apply: txns guarded by leadership.compare

    controllers:
      app        App replicas -> owned guests <app>-<n> (lowest free n; scale-down: highest)
      host       no renewal for > suspect_after (swept every liveness_interval) -> suspect
                 (HostSuspect); renewed -> ready (HostRecovered); liveness key gone +
                 lease expired -> lost (HostLost); key back -> ready (HostReady)
      placement  one cluster-wide pass: unbound guests + guests of lost hosts -> scheduler
                 -> bind (GuestPlaced; GuestRebound, epoch+1); unplaceable -> note_unplaced
      events     GuestRunning on status changes (coalesced per host); prune to newest 10k
      backup     in-flight backups whose guest moved or was deleted -> failed (BackupFailed)
      migration  one cluster-wide pass: start pending live migrations within the limits
                 (MigrationStarted), fail stuck or orphaned ones (MigrationFailed)
      drain      per draining host: migrate running guests, stop-then-rebind the others;
                 empty -> HostDrained (once)

Vocabulary: *level-based*: a reconcile never trusts an event's payload, it re-reads;
*leader-guarded*: a write carrying ``leadership.compare``, which fails once another
server leads; *temporary* vs *permanent* errors: retried with backoff vs reported.

Safety (DESIGN.md invariant 1): a guest leaves a lost host only after the host's lease
expired (checked with ``lease_ttl``), and only while the host's liveness key is still
absent (a compare in the same transaction as the new binding).
"""

from podium.controller._backups import BackupSweeper
from podium.controller._controllers import AppController, HostController, PlacementController
from podium.controller._drain import DrainController
from podium.controller._errors import ControllerError, PermanentError, TemporaryError
from podium.controller._events import EventRecorder
from podium.controller._leader import LeaderElection, Leadership
from podium.controller._manager import ControllerManager
from podium.controller._migration_plans import MigrationLimits, plan_drain, plan_migrations
from podium.controller._migrations import MigrationController
from podium.controller._plans import plan_app, plan_host, plan_placement
from podium.controller._queue import WorkQueue

__all__ = [
    "AppController",
    "BackupSweeper",
    "ControllerError",
    "ControllerManager",
    "DrainController",
    "EventRecorder",
    "HostController",
    "LeaderElection",
    "Leadership",
    "MigrationController",
    "MigrationLimits",
    "PermanentError",
    "PlacementController",
    "TemporaryError",
    "WorkQueue",
    "plan_app",
    "plan_drain",
    "plan_host",
    "plan_migrations",
    "plan_placement",
]
