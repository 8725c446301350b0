"""Host agent: holds its host's lease, runs what is assigned to it, reports what runs.

::

    ServerLink (HTTPS to the server)                       Driver (sim, qemu)
      register ──> Registration(lease, ttl) ─┐                    ▲
      keepalive every ttl/4 ──ok──> fence.arm(sent + ttl - margin)│ create/start/stop/destroy
      assignments + watch ──> desired ──┐                         │
                                        ▼                         │
                   plan_local(desired, observed = driver.list()) ─┘  (one op at a time per guest)
                                        │
      report(batch of changed states) <─┘   rejected (stale epoch) ──> stop that guest

    watchdog THREAD: deadline passed ──> driver.kill_all(), report nothing ──> register again

    assignment extras (driver permitting: LiveMigration, BlockBackup; ConsoleSource):
      incoming ──> prepare_incoming ──> report_migration(ready, uri)      (target)
      incoming gone, guest incoming here ──> activate                     (target)
      migrate ──> migrate_out ──> report_migration(progress…, completed|failed)  (source)
      backup ──> backup ──> report_backup(running, progress…, completed|failed)
      console tail changed ──> push_console (every 2 s at most per guest)
    FlowSource driver: flow counters ──> rates ──> report_traffic (every 10 s; _traffic)

Vocabulary: an *assignment* is one guest at one epoch (``{"guest", "uid", "epoch",
"spec"}``); *fencing* is killing every guest before the host lease can expire, so the
control plane may restart them elsewhere without a double run; *adoption* is taking
over guests that kept running across an agent restart; a guest *migrated away* is the
stopped source of a completed live migration, never started again at its epoch. The
agent never imports the store, the state layer or the controllers: all it knows comes
through its link.

Many agents in one process (simulated hosts)::

    agents = [Agent(f"h{i}", AgentLink(url, token, ca), SimDriver(name=f"h{i}", capacity=cap),
                    capacity=cap) for i in range(300)]
    await run_many(agents)       # one task per agent, one watchdog thread for all
"""

from podium.agent._agent import Agent, AgentState, run_many
from podium.agent._link import (
    AgentError,
    FenceReport,
    LeaseExpired,
    LinkError,
    Registration,
    ServerLink,
)
from podium.agent._plan import (
    Activate,
    CancelMigration,
    MigrateOut,
    PrepareIncoming,
    RunBackup,
    StartGuest,
    StopGuest,
    plan_local,
    reports,
)
from podium.agent._watchdog import DEFAULT_WATCHDOG, Fence, Watchdog

__all__ = [
    "DEFAULT_WATCHDOG",
    "Activate",
    "Agent",
    "AgentError",
    "AgentState",
    "CancelMigration",
    "Fence",
    "FenceReport",
    "LeaseExpired",
    "LinkError",
    "MigrateOut",
    "PrepareIncoming",
    "Registration",
    "RunBackup",
    "ServerLink",
    "StartGuest",
    "StopGuest",
    "Watchdog",
    "plan_local",
    "reports",
    "run_many",
]
