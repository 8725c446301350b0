"""The chaos suite's CI subset: seeded faults on 3-host qemu labs, invariants checked.

The same code as ``python tests/chaos/run.py --runs N --seed S`` (which runs more): one
lab, three small guests, then per run one fault drawn from a fixed seed — kill -9 of an
agent, a pause or a fabric cut of a host shorter or longer than the host TTL, kill -9 of
the server or of a QEMU — healed, then a wait until everything runs again. An independent
checker samples every QEMU by ``-uuid`` (never two running) and the store (epochs never go
back); a short pause or cut must not move a guest; nothing may be left behind.
"""

from __future__ import annotations

import shutil

import pytest

from tests.chaos.run import run_chaos
from tests.integration.lab.conftest import require_netns
from tests.support.components import missing_component

pytestmark = pytest.mark.slow

SEED = 14  # draws kill_agent, kill_qemu, pause_long, pause_short, partition_short/long
RUNS = 6
HOST_TTL = 6  # shorter than the lab's default 10 s, so long faults fit the CI budget


@pytest.mark.timeout(360)
def test_seeded_faults_on_a_qemu_lab_never_run_a_guest_twice_and_converge() -> None:
    require_netns()
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed (scripts/setup installs it)")
    lines: list[str] = []
    summary = run_chaos(
        runs=RUNS, seed=SEED, hosts=3, guests=3, driver="qemu", host_ttl=HOST_TTL,
        bound=90.0, say=lines.append,
    )  # fmt: skip
    report = "\n".join([*lines, *summary.lines()])
    assert summary.runs == RUNS, report
    assert sum(summary.faults.values()) == RUNS, report
    assert summary.violations == [], report
    assert summary.lock_saves == [], report  # the paused host fenced before the restart
    assert summary.leaks == [], report
    assert summary.qemu_samples > 50 and summary.store_samples > 10, report


ETCD_SEED = 6  # draws kill_leader, kill_etcd_member, pause_long, kill_leader, kill_server
ETCD_RUNS = 5
ETCD_FAULTS = ("kill_leader", "kill_etcd_member", "kill_server", "pause_long")


@pytest.mark.etcd
@pytest.mark.timeout(420)
def test_seeded_faults_on_three_servers_over_etcd_never_run_a_guest_twice_and_converge() -> None:
    """The distributed path: a 3-member etcd the lab runs, three servers, agents that know
    all three. kill -9 of the leading server or of any server, kill -9 of one etcd
    member (restarted later), an agent paused past the TTL."""
    require_netns()
    for tool in ("qemu-system-x86_64", "qemu-img", "etcd"):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed (scripts/setup installs it)")
    lines: list[str] = []
    summary = run_chaos(
        runs=ETCD_RUNS, seed=ETCD_SEED, hosts=3, guests=3, driver="qemu", host_ttl=HOST_TTL,
        store="etcd3", servers=3, kinds=ETCD_FAULTS, bound=90.0, say=lines.append,
    )  # fmt: skip
    report = "\n".join([*lines, *summary.lines()])
    assert summary.runs == ETCD_RUNS, report
    assert {"kill_leader", "kill_etcd_member"} <= set(summary.faults), report
    assert summary.violations == [], report
    assert summary.lock_saves == [], report
    assert summary.leaks == [], report
