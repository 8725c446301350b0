"""Randomised, seeded fault schedules against one ``podium lab``, with invariant checks.

    python tests/chaos/run.py --runs N --seed S [--hosts 3] [--guests 3] [--driver qemu|sim]
                              [--store etcd3|sqlite] [--servers 3] [--faults a,b,...]

::

    podium lab up (subprocess, PODIUM_LAB_DIR in a temp dir, a unique lab name; by default
                   a 3-member etcd the lab runs and 3 podium servers on it)
      ──> apply guests chaos-1..M (128 MiB, 1 CPU) ──> all running
      ──> Checker threads (QEMUs by -uuid every 100 ms, store every 500 ms)
      ──> per run: random.Random(S) draws a fault ──> inject ──> heal
                   ──> wait until every guest runs and every host is ready (bound)
                   ──> a short pause / cut: the guests of that host kept host and epoch
      ──> summary (runs, faults by kind, violations) ──> podium lab down (always)
          ──> leak check: no pdm-<lab>-* namespace, no process of the lab left

Exit status 0 only with no violation and no leak. Bounded: ``runs`` faults, each at
most a few TTLs long, each followed by at most ``--bound`` s of waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from podium.client import ClientConfig
from tests.chaos.checker import Checker, Violation, stamp
from tests.chaos.faults import Fault, FaultError, LabHandle
from tests.integration.lab.conftest import LeakGuard

PODIUM = [sys.executable, "-m", "podium"]
FAULTS = (
    "kill_agent",
    "pause_short",
    "pause_long",
    "partition_short",
    "partition_long",
    "kill_qemu",
    "kill_server",
    "kill_leader",
    "kill_etcd_member",
)
NEEDS_ETCD3 = ("kill_etcd_member",)
SETTLE = 2.0  # s after healing before convergence is checked
NO_FAILOVER = ("pause_short", "partition_short")  # must not move a guest
Say = Callable[[str], None]


def _now() -> str:
    return stamp(time.time())


@dataclass
class Summary:
    runs: int = 0
    seed: int = 0
    setup: str = ""  # the lab: hosts, driver, store, servers, fault kinds
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    no_failover_checked: int = 0
    convergence: list[float] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    lock_saves: list[str] = field(default_factory=list)  # agent.log lines: image lock refused
    qemu_samples: int = 0
    running_seen: int = 0
    store_samples: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # A near miss counts: the issue asks for never two QEMUs outside -incoming, and
        # real shared storage may not lock images the way the lab's directory does.
        return not self.violations and not self.leaks and not self.lock_saves

    def lines(self) -> list[str]:
        conv = self.convergence or [0.0]
        mean = sum(conv) / len(conv)
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        out = [
            f"lab: {self.setup}",
            f"runs: {self.runs} (seed {self.seed})",
            f"faults injected: {sum(self.faults.values())}: {faults}",
            f"convergence after healing: max {max(conv):.1f} s, mean {mean:.1f} s",
            f"no-failover checks (short pause / short cut): {self.no_failover_checked}",
            f"checker samples: QEMU {self.qemu_samples} ({self.running_seen} guest-samples "
            f"saw a running QEMU), store {self.store_samples}",
            f"near misses (a 2nd QEMU refused its disk by QEMU's image lock while the "
            f"1st ran): {len(self.lock_saves)}",
            *(f"  {line}" for line in self.lock_saves[:6]),
            f"violations found: {len(self.violations)}",
            *(f"  {v.line()}" for v in self.violations),
            f"leaks after lab down: {len(self.leaks)}",
            *(f"  {leak}" for leak in self.leaks),
        ]
        return out


@dataclass
class ChaosLab:
    """One lab brought up and down through the CLI, as an operator would."""

    name: str
    root: Path
    env: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    def podium(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        done = subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=self.env,
                              input=stdin, timeout=timeout, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"podium {' '.join(args)}: {done.stderr.strip()[-1500:]}")
        return done.stdout

    @property
    def dir(self) -> Path:
        return self.root / self.name


def _manifest(count: int) -> str:
    docs = [
        f"kind: Guest\nname: chaos-{i}\nspec: {{request: {{cpu: 1, memory_mib: 128}}}}\n"
        for i in range(1, count + 1)
    ]
    return "---\n".join(docs)


def _draw(rng: random.Random, kinds: tuple[str, ...], ttl: float) -> tuple[str, float]:
    """A fault kind and its one parameter (seconds), from the seeded generator."""
    kind = rng.choice(kinds)
    seconds = {
        "kill_agent": rng.uniform(0.0, 2.0),  # down for
        "pause_short": rng.uniform(0.2, 0.4) * ttl,  # well inside the grace
        "pause_long": rng.uniform(1.3, 1.8) * ttl,  # past the lease
        "partition_short": rng.uniform(0.15, 0.3) * ttl,
        "partition_long": rng.uniform(1.5, 2.0) * ttl,
        "kill_qemu": 0.0,
        "kill_server": rng.uniform(0.0, 2.0),  # down for
        "kill_leader": rng.uniform(0.0, 2.0),
        "kill_etcd_member": rng.uniform(0.5, 6.0),  # down for; 2 of 3 keep the quorum
    }[kind]
    return kind, round(seconds, 2)


LOCK_REFUSED = 'Failed to get "write" lock'


def _lock_saves(lab_dir: Path) -> list[str]:
    """Agent log lines where QEMU's image lock, not podium, stopped a second instance.

    A near miss of invariant 1: the guest was started elsewhere while its QEMU still ran
    here; only the lock on the shared qcow2 (a local directory in the lab) refused it.
    """
    found = []
    for log in sorted(lab_dir.glob("hosts/*/agent.log")):
        host = log.parent.name
        for line in log.read_text(errors="replace").splitlines():
            if LOCK_REFUSED in line:
                found.append(f"{host}: {line[:160]}")
    return found


def _inject(
    handle: LabHandle, kind: str, seconds: float, target: str, guest: str, uuid: str, pick: int
) -> Fault:
    """Inject ``kind``; ``pick`` chooses which server or etcd member (modulo their count)."""
    if kind == "kill_agent":
        return handle.kill_agent(target, down_for=seconds)
    if kind.startswith("pause_"):
        return handle.pause_agent(target, seconds, kind)
    if kind.startswith("partition_"):
        return handle.partition(target, seconds, kind)
    if kind == "kill_qemu":
        return handle.kill_qemu(guest, uuid)
    if kind == "kill_server":
        return handle.kill_server(pick % len(handle.servers()), down_for=seconds)
    if kind == "kill_leader":
        return handle.kill_leader(down_for=seconds)
    if kind == "kill_etcd_member":
        return handle.kill_etcd_member(pick % len(handle.state().etcd), down_for=seconds)
    raise ValueError(kind)


def _one_run(
    i: int,
    rng: random.Random,
    kinds: tuple[str, ...],
    ttl: float,
    lab: ChaosLab,
    handle: LabHandle,
    checker: Checker,
    names: set[str],
    bound: float,
    summary: Summary,
    say: Say,
) -> None:
    hosts = set(handle.hosts())
    before = checker.sample_store_now()
    kind, seconds = _draw(rng, kinds, ttl)
    guest = rng.choice(sorted(names))
    pick = rng.randrange(1 << 16)
    status = before[guest]["status"]
    target = str(status.get("host") or rng.choice(sorted(hosts)))
    held = {  # what must not move after a short pause / cut of `target`
        n: (g["status"].get("host"), g["status"].get("epoch"))
        for n, g in before.items()
        if n in names and g["status"].get("host") == target
    }
    try:
        uuid = str(status.get("uuid") or "")
        fault = _inject(handle, kind, seconds, target, guest, uuid, pick)
    except FaultError as err:
        checker.violate(f"run {i}: could not inject {kind} on {target}: {err}")
        return
    summary.faults[kind] += 1
    line = f"{_now()} run {i}: {fault.line()}"
    say(line)
    summary.log.append(line)
    time.sleep(SETTLE)  # let the lab notice what happened before asking if it is whole
    took, after = checker.wait_converged(names, hosts, bound)
    summary.convergence.append(took)
    if kind in NO_FAILOVER:
        summary.no_failover_checked += 1
        now = {n: (after[n]["status"].get("host"), after[n]["status"].get("epoch")) for n in held}
        moved = {n: (held[n], now[n]) for n in held if now[n] != held[n]}
        if moved:
            checker.violate(
                f"run {i}: {kind} of {target} for {seconds} s (< host TTL {ttl:g} s) caused a "
                f"failover: (host, epoch) before -> after {moved}"
            )
    placed = {n: (g["status"].get("host"), g["status"].get("epoch")) for n, g in after.items()}
    line = f"{_now()} run {i}: converged in {took:.1f} s: {placed}"
    say(line)
    summary.log.append(line)


def run_chaos(
    *,
    runs: int,
    seed: int,
    hosts: int = 3,
    guests: int = 3,
    driver: str = "qemu",
    host_ttl: int = 10,
    store: str | None = None,
    servers: int = 1,
    bound: float = 120.0,
    kinds: tuple[str, ...] | None = None,
    keep: bool = False,
    say: Say = print,
) -> Summary:
    """Bring a lab up, run ``runs`` seeded faults with checks, take it down; summarise.

    ``store`` None: the lab's SQLite and one server; ``"etcd3"``: a 3-member etcd the lab
    runs, with ``servers`` podium servers on it (kill_etcd_member needs it).
    """
    kinds = tuple(
        k
        for k in (kinds or FAULTS)
        if (driver == "qemu" or k != "kill_qemu") and (store == "etcd3" or k not in NEEDS_ETCD3)
    )
    rng = random.Random(seed)
    summary = Summary(seed=seed)
    root = Path(tempfile.mkdtemp(prefix="podium-chaos-"))
    name = f"c{secrets.token_hex(3)}"
    env = {**os.environ, "PODIUM_LAB_DIR": str(root), "PODIUM_QEMU_ACCEL": "tcg"}
    env.pop("PODIUM_CONFIG", None)
    lab = ChaosLab(name, root, env)
    guard = LeakGuard(name=name, marker=str(root))
    summary.setup = (
        f"{hosts} hosts, {guests} guests, driver {driver}, host TTL {host_ttl} s, store "
        f"{store or 'sqlite'}, {servers} server(s), faults {','.join(kinds)}"
    )
    say(f"{_now()} lab {name} up: {summary.setup}")
    say(f"{_now()} lab dir {root}")
    try:
        lab.info = json.loads(lab.podium(
            "lab", "up", "--hosts", str(hosts), "--driver", driver, "--json",
            "--name", name, "--host-ttl", str(host_ttl), "--servers", str(servers),
            *(("--store", store) if store else ()), timeout=600,
        ))  # fmt: skip
        env["PODIUM_CONFIG"] = lab.info["config"]
        handle = LabHandle(lab.dir)
        lab.podium("apply", "-f", "-", stdin=_manifest(guests))
        names = {f"chaos-{i}" for i in range(1, guests + 1)}
        with Checker(ClientConfig.load(lab.info["config"]), qemu=driver == "qemu") as checker:
            checker.acknowledged = set(names)  # podium apply returned 0: acknowledged
            took, _ = checker.wait_converged(names, set(lab.info["hosts"]), 180)
            say(f"{_now()} {guests} guests running after {took:.1f} s")
            for i in range(1, runs + 1):
                if any("not converged" in v.what for v in checker.violations):
                    say("stopping: the lab did not converge; later runs would prove nothing")
                    break
                _one_run(i, rng, kinds, host_ttl, lab, handle, checker, names, bound, summary, say)
                summary.runs = i
            time.sleep(1)  # a last second of sampling
        summary.violations = list(checker.violations)
        summary.qemu_samples, summary.store_samples = checker.qemu_samples, checker.store_samples
        summary.running_seen = checker.running_seen
        summary.lock_saves = _lock_saves(lab.dir)
        if summary.violations:
            say("QEMU timeline (state changes):")
            for t, what in checker.timeline[-60:]:
                say(f"  {stamp(t)} {what}")
            try:
                say("podium events (last 60):")
                say("\n".join(lab.podium("events").splitlines()[-60:]))
            except RuntimeError as err:
                say(f"(no events: {err})")
    finally:
        try:
            lab.podium("lab", "down", "--name", name, timeout=180)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            summary.leaks.append(f"podium lab down failed: {err}")
        summary.leaks += guard.check()
        if summary.ok and not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"logs kept in {root}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--guests", type=int, default=3)
    parser.add_argument("--driver", choices=("qemu", "sim"), default="qemu")
    parser.add_argument("--host-ttl", type=int, default=10, help="the lab's host lease TTL, s")
    parser.add_argument(
        "--store",
        default="etcd3",
        help="etcd3 (a 3-member etcd the lab runs) or sqlite (one server)",
    )
    parser.add_argument(
        "--servers", type=int, default=3, help="podium servers on the etcd3 store (1 with sqlite)"
    )
    parser.add_argument("--bound", type=float, default=120.0, help="liveness bound, s")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated kinds")
    parser.add_argument("--keep", action="store_true", help="keep the lab dir (logs)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(FAULTS)
    if unknown or args.runs < 0 or args.hosts < 2:
        parser.error(f"unknown faults {sorted(unknown)}" if unknown else "bad --runs/--hosts")
    if args.store not in ("etcd3", "sqlite") or (args.store == "sqlite" and args.servers != 1):
        parser.error("--store is etcd3 or sqlite; sqlite runs one server (--servers 1)")
    if os.geteuid() != 0:
        parser.error("the chaos suite needs root (podium lab makes network namespaces)")
    # SIGTERM (and SIGINT, which a background job ignores) unwind: the lab goes down.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    summary = run_chaos(
        runs=args.runs, seed=args.seed, hosts=args.hosts, guests=args.guests,
        driver=args.driver, host_ttl=args.host_ttl, bound=args.bound, kinds=kinds,
        store=None if args.store == "sqlite" else args.store, servers=args.servers,
        keep=args.keep, say=lambda line: print(line, flush=True),
    )  # fmt: skip
    print("== chaos summary ==")
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
