"""`podium lab`: a real multi-host cluster on one machine, hosts as network namespaces.

::

     root namespace                 pdm-<lab>-fab                 pdm-<lab>-h1 (one per host)
    ┌───────────────────────┐      ┌──────────────────────┐      ┌───────────────────────────┐
    │ podium server ────────┼──────┼─> socket 10.213.0.1  │      │ podium agent --name h1    │
    │  127.0.0.1:PORT (CLI) │ made │   :7443 on fab0      │      │  (ip netns exec; dials    │
    │                       │ here │ fab0 ── up-h1 ───────┼─veth─┼─ up0 ── br0 10.213.0.17/16│
    │ podium lab up/down    │      │      └─ up-h2 ...    │      │            └─ taps (QEMU) │
    └───────────────────────┘      └──────────────────────┘      └───────────────────────────┘

Guests on one host meet on its ``br0`` only; other hosts are reached through
``up0`` -> ``fab0``. The agent's control traffic takes the same path, so cutting a
host's ``up0`` cuts it off completely (a partition). Addresses exist only inside
the lab's namespaces; the server's fabric socket is bound inside ``pdm-<lab>-fab``.

Vocabulary: *layout* — every name and address, computed up front (:func:`plan_lab`);
*state* — ``<lab dir>/lab.json``, what ``down`` removes; *lab dir* —
``$PODIUM_LAB_DIR/<name>`` (default ``/var/lib/podium/lab/<name>``)::

    lab.json                 the state (0600)
    server/                  podium.db, admin.conf, TLS files, server.log
    server2/, server3/ ...   ``--servers N`` (needs etcd): the other servers (same CA, token)
    admin.conf               with several servers: the CLI's config naming them all
    hosts/<host>/            token (join, then the host's own), ca.pem, agent.log
    data/<host>/, volumes/   the agents' --data-dir (shared): guest folders, the "SAN"
    etcd/e1..e3 (+ .log)     ``--store etcd3``: the members' data dirs (127.0.0.1 ports)

``kill_host`` / ``restart_agent`` crash a host (agent + its QEMUs, SIGKILL by PID) and
bring its agent back, for failover benchmarks and chaos tests.

``down`` keeps the lab dir (logs); the next ``up`` of that name starts it afresh.
"""

from podium.lab._down import DownReport, lab_down
from podium.lab._errors import LabError
from podium.lab._etcd import ETCD3, EtcdMember
from podium.lab._hosts import kill_host, restart_agent
from podium.lab._layout import (
    DEFAULT_NAME,
    DEFAULT_SUBNET,
    HostLayout,
    LabLayout,
    lab_dir,
    plan_lab,
)
from podium.lab._state import LabServer, LabState, load_state
from podium.lab._up import LabInfo, lab_up

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_SUBNET",
    "ETCD3",
    "DownReport",
    "EtcdMember",
    "HostLayout",
    "LabError",
    "LabInfo",
    "LabLayout",
    "LabServer",
    "LabState",
    "kill_host",
    "lab_dir",
    "lab_down",
    "lab_up",
    "load_state",
    "plan_lab",
    "restart_agent",
]
