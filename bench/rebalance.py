"""Rebalancing under drifting load: a simulated cluster, in process, no server.

``python bench/rebalance.py [--json] [--hosts 200] [--guests 2000] [--hours 12]
[--round 300] [--seed 1] [--max-concurrent 8] [--max-per-hour 60] [--window 1800]``

Builds ``--hosts`` hosts (32 cpu, 128 GiB, 20k IOPS, 10 Gb/s; 10 racks) and places
``--guests`` guests of mixed sizes (apps of 4 replicas, spread over hosts) with the
default scheduler, which packs them (best fit). Then, every ``--round`` simulated
seconds for ``--hours``:

1. every guest's load drifts: a mean-reverting random walk around its app's mean, which
   follows a daily-like wave (period 6 h, per-app phase); usage = reservation x load
   (memory: 0.5 + 0.3 x load);
2. hot hosts are counted (usage above 85% of capacity in any dimension);
3. the planner (:func:`podium.scheduler._rebalance.plan_rebalance`, the controller's own
   code) proposes live migrations within the budget (``--max-concurrent`` per round,
   ``--max-per-hour`` in any hour) and the hysteresis window; they are applied (a
   migration finishes within a round), and hot hosts are counted again.

The same drift runs without rebalancing (same seed) as the baseline, so the figures
are compared as ratios in one run. The script asserts that no guest moved twice inside
the window, that no round exceeded the concurrent budget and no hour the hourly one,
and that every host's reservations fit its capacity after every round.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np

from podium.model import Resources, Spread
from podium.scheduler import GuestRequest, HostRow, HostTable, PlacementRequest, default_scheduler
from podium.scheduler._rebalance import (
    HOUR,
    RebalanceGuest,
    RebalanceInput,
    RebalancePolicy,
    plan_rebalance,
)

CAPACITY = Resources(cpu=32, memory_mib=131072, iops=20000, net_mbps=10000)
SIZES = (  # (cpu, memory_mib, iops, net_mbps), weight
    ((1, 2048, 200, 100), 0.4),
    ((2, 8192, 500, 250), 0.3),
    ((4, 16384, 1000, 500), 0.2),
    ((8, 32768, 2000, 1000), 0.1),
)
PERIOD = 6 * HOUR


def build(hosts: int, guests: int, seed: int) -> tuple[list[HostRow], list[GuestRequest], dict]:
    rng = np.random.default_rng(seed)
    rows = [HostRow(f"h{i:03d}", CAPACITY, labels={"rack": f"r{i % 10}"}) for i in range(hosts)]
    reqs: list[GuestRequest] = []
    for a in range(guests // 4):
        vec, _ = SIZES[rng.choice(len(SIZES), p=[w for _, w in SIZES])]
        request = Resources(vec[0], vec[1], vec[2], vec[3])
        for r in range(4):
            reqs.append(GuestRequest(f"a{a:04d}-{r}", request, app=f"a{a:04d}", spread=Spread.HOST))
    result = default_scheduler().place(PlacementRequest(HostTable.build(rows), reqs))
    assert not result.unplaced, f"{len(result.unplaced)} guests did not fit: lower --guests"
    apps = {
        f"a{a:04d}": (rng.uniform(0.55, 0.95), rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi))
        for a in range(guests // 4)
    }
    return rows, reqs, {"where": result.placements, "apps": apps}


def run(args: argparse.Namespace, rebalance: bool) -> dict:
    rows, reqs, data = build(args.hosts, args.guests, args.seed)
    where: dict[str, str] = dict(data["where"])
    apps = data["apps"]
    rng = np.random.default_rng(args.seed + 1)
    load = np.array([apps[g.app][0] for g in reqs])
    req = np.array([g.request.as_tuple() for g in reqs])
    mean = np.array([apps[g.app][0] for g in reqs])
    amp = np.array([apps[g.app][1] for g in reqs])
    phase = np.array([apps[g.app][2] for g in reqs])
    policy = RebalancePolicy(
        max_concurrent=args.max_concurrent, max_per_hour=args.max_per_hour, window=args.window
    )
    moves: list[tuple[float, str, str, str, str]] = []  # time, guest, from, to, reason
    last_moved: dict[str, float] = {}
    last_source: dict[str, str] = {}
    rounds = []
    plan_s = []
    for k in range(int(args.hours * HOUR / args.round)):
        now = (k + 1) * args.round
        target = np.clip(mean + amp * np.sin(2 * np.pi * now / PERIOD + phase), 0.05, 1.0)
        load = np.clip(load + 0.3 * (target - load) + rng.normal(0, 0.05, load.size), 0.02, 1.0)
        use = req * load[:, None]
        use[:, 1] = req[:, 1] * (0.5 + 0.3 * load)
        alloc: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))
        for g in reqs:
            alloc[where[g.name]] += np.array(g.request.as_tuple())
        hosts = [replace(r, allocated=Resources(*alloc[r.name])) for r in rows]
        assert all((alloc[r.name] <= np.array(CAPACITY.as_tuple()) + 1e-9).all() for r in rows), (
            "a host's reservations exceed its capacity"
        )
        guests = [
            RebalanceGuest(g, where[g.name], tuple(float(x) for x in use[i]))  # type: ignore[arg-type]
            for i, g in enumerate(reqs)
        ]
        hour = sum(1 for t, *_ in moves if now - t < HOUR)
        inp = RebalanceInput(hosts, guests, {}, last_moved, last_source, float(now), 0, hour)
        start = time.perf_counter()
        policy_now = policy if rebalance else replace(policy, max_concurrent=0)
        plan = plan_rebalance(inp, policy_now)
        plan_s.append(time.perf_counter() - start)
        for m in plan.moves:
            assert where[m.guest] == m.source
            where[m.guest] = m.target
            moves.append((float(now), m.guest, m.source, m.target, m.reason))
            last_moved[m.guest] = float(now)
            last_source[m.guest] = m.source
        rounds.append(
            {"t": now, "hot_before": plan.hot_before, "hot_after": plan.hot_after,
             "moves": len(plan.moves), "in_last_hour": hour + len(plan.moves)}
        )  # fmt: skip
    by_guest: dict[str, list[float]] = defaultdict(list)
    for t, g, *_ in moves:
        by_guest[g].append(t)
    gaps = [b - a for ts in by_guest.values() for a, b in itertools.pairwise(ts)]
    assert all(gap >= args.window for gap in gaps), "a guest moved twice inside the window"
    max_round = max((r["moves"] for r in rounds), default=0)
    max_hour = max((r["in_last_hour"] for r in rounds), default=0)
    assert max_round <= args.max_concurrent and max_hour <= args.max_per_hour
    reasons: dict[str, int] = defaultdict(int)
    for *_, reason in moves:
        reasons[reason] += 1
    return {
        "rounds": rounds,
        "hot_mean_before": float(np.mean([r["hot_before"] for r in rounds])),
        "hot_mean_after": float(np.mean([r["hot_after"] for r in rounds])),
        "hot_end": rounds[-1]["hot_after"],
        "migrations": len(moves),
        "by_reason": dict(reasons),
        "max_per_round": max_round,
        "max_per_hour": max_hour,
        "guests_moved_twice": sum(1 for ts in by_guest.values() if len(ts) > 1),
        "min_gap_s": min(gaps) if gaps else None,
        "plan_ms_p50": 1000 * float(np.median(plan_s)),
        "plan_ms_max": 1000 * float(np.max(plan_s)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--guests", type=int, default=2000)
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--round", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-concurrent", type=int, default=8)
    p.add_argument("--max-per-hour", type=int, default=60)
    p.add_argument("--window", type=float, default=1800.0)
    args = p.parse_args(argv)
    base = run(args, rebalance=False)
    with_rb = run(args, rebalance=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}",
        "hosts": args.hosts,
        "guests": args.guests,
        "hours": args.hours,
        "round_s": args.round,
        "budget": {"concurrent": args.max_concurrent, "per_hour": args.max_per_hour},
        "window_s": args.window,
        "baseline": {k: v for k, v in base.items() if k != "rounds"},
        "rebalanced": {k: v for k, v in with_rb.items() if k != "rounds"},
        "hot_ratio": with_rb["hot_mean_after"] / max(base["hot_mean_after"], 1e-9),
        "rounds": with_rb["rounds"],
    }
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    b, r = out["baseline"], out["rebalanced"]
    print(f"{args.hosts} hosts, {args.guests} guests, {args.hours:g} h in {args.round:g} s rounds")
    print(f"hot hosts (mean per round): {b['hot_mean_after']:.1f} without, "
          f"{r['hot_mean_after']:.1f} with rebalancing (ratio {out['hot_ratio']:.2f})")  # fmt: skip
    print(f"hot hosts at the end: {b['hot_end']} without, {r['hot_end']} with")
    print(f"migrations: {r['migrations']} {r['by_reason']}; most in a round "
          f"{r['max_per_round']}/{args.max_concurrent}, in an hour "
          f"{r['max_per_hour']}/{args.max_per_hour}; guests moved twice "
          f"{r['guests_moved_twice']} (closest {r['min_gap_s']} s apart, window "
          f"{args.window:g} s)")  # fmt: skip
    print(f"planning: p50 {r['plan_ms_p50']:.0f} ms, max {r['plan_ms_max']:.0f} ms per round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
