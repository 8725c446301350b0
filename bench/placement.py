"""The placement planner: throughput, packing quality, and distance from the optimum.

``python bench/placement.py [--json] [--only SECTIONS] [--hosts N] [--guests M]``

Sections (``--only`` picks some; each is independent):

- ``planner``: a synthetic instance of ``--hosts`` hosts (default 10,000; 40 per rack,
  10 sites) and ``--guests`` guests (default 1,000,000; apps of 2-5 replicas, a quarter
  each spread by host, rack, site or not at all; 4 dimensions), written to a JSON
  file, then loaded (``json.load`` + parse), planned (``pack``) and verified by the
  independent checker, each timed. placements/s = placed guests / plan seconds; the
  end-to-end rate (load + plan + verify) is reported beside it.
- ``online``: the server's scheduler (``default_scheduler()``, the one placement
  passes use) on ``--online-hosts`` hosts (default 5,000), one batch of
  ``--online-guests`` plain replicas (default 100,000; apps of 1,000, the C1M shapes):
  guests/s with the bulk path (whole groups through the planner), and one guest at a
  time (``bulk_min=None``) on the first ``--online-one-by-one`` guests (default 2,000)
  of the same batch; the ratio of the two rates is measured in the same run.
- ``packing``: large instances with cloud-like shapes (1/2/4/8/16 vCPU, 2/4/8 GiB per
  vCPU, IOPS and network roughly proportional), identical and mixed hosts: hosts used
  over the lower bound (the max over dimensions of the fewest hosts whose capacity
  covers the demand, largest first), each and the worst.
- ``optimal``: small instances (<= 60 guests) planned, then solved exactly by OR-Tools
  CP-SAT (``ortools``, a dev extra) with a time limit: the fraction where the planner
  uses as few hosts as the proven optimum.
- ``c1m``: end to end through a real ``podium server`` and its SQLite store:
  ``--c1m-hosts`` simulated hosts registered through the agent API and
  ``--c1m-guests`` guests applied as Apps, until every guest is bound or
  ``--c1m-timeout`` seconds pass (``bench/c1m.py``, which also runs alone).

Prints a summary, or one JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from podium.scheduler._check import solve_parsed
from podium.scheduler._instance import parse_instance

SECTIONS = ("planner", "online", "packing", "optimal", "c1m")
ONLINE_SHAPES = (  # (cpu, memory_mib, iops, net_mbps), as bench/c1m.py's apps
    (1, 512, 50, 10),
    (2, 2048, 100, 20),
    (4, 4096, 200, 50),
    (1, 1024, 100, 10),
    (8, 16384, 400, 100),
)
SHAPES = (1, 2, 4, 8, 16)  # vCPU
SHAPE_WEIGHTS = (0.3, 0.3, 0.2, 0.15, 0.05)
GIB_PER_CPU = (2, 4, 8)


def _hosts(
    n: int, capacity: tuple[float, ...], *, per_rack: int = 40, sites: int = 10
) -> list[dict[str, Any]]:
    return [
        {
            "name": f"h{i:05d}",
            "capacity": dict(zip(("cpu", "memory_mib", "iops", "net_mbps"), capacity, strict=True)),
            "labels": {"rack": f"r{i // per_rack:04d}", "site": f"s{(i // per_rack) % sites}"},
        }
        for i in range(n)
    ]


def _apps(
    rng: np.random.Generator, guests: int, shapes: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """Apps of 2-5 replicas (one shape each), spread host/rack/site/none in turn."""
    out: list[dict[str, Any]] = []
    spreads = ("host", "rack", "site", None)
    a = 0
    while len(out) < guests:
        replicas = min(int(rng.integers(2, 6)), guests - len(out))
        request = shapes[int(rng.integers(len(shapes)))]
        spread = spreads[a % 4]
        for r in range(replicas):
            guest: dict[str, Any] = {"name": f"a{a}-{r}", "app": f"a{a}", "request": request}
            if spread:
                guest["spread"] = spread
            out.append(guest)
        a += 1
    return out


def _cloud_shapes(
    rng: np.random.Generator, count: int, scale: float = 1.0
) -> list[dict[str, float]]:
    shapes = []
    for _ in range(count):
        cpu = float(rng.choice(SHAPES, p=SHAPE_WEIGHTS)) * scale
        gib = float(rng.choice(GIB_PER_CPU))
        shapes.append({
            "cpu": cpu,
            "memory_mib": int(cpu * gib * 1024),
            "iops": int(cpu * 300 * rng.uniform(0.5, 1.5)),
            "net_mbps": int(cpu * 100 * rng.uniform(0.5, 1.5)),
        })  # fmt: skip
    return shapes


def planner_section(hosts: int, guests: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    # big hosts, small guests (0.25-4 vCPU): a million guests fill ~80% of 10,000 hosts
    shapes = _cloud_shapes(rng, 60, scale=0.25)
    instance = {
        "hosts": _hosts(hosts, (128, 524288, 100000, 40000)),
        "guests": _apps(rng, guests, shapes),
    }
    with tempfile.TemporaryDirectory(prefix="podium-plan-") as folder:
        path = Path(folder) / "instance.json"
        path.write_text(json.dumps(instance))
        size = path.stat().st_size
        del instance
        started, cpu = time.perf_counter(), time.process_time()
        parsed = parse_instance(json.loads(path.read_text()))
        load, load_cpu = time.perf_counter() - started, time.process_time() - cpu
    cpu = time.process_time()
    report, timings = solve_parsed(parsed, "pack")
    cpu = time.process_time() - cpu
    placed = len(report["placements"])
    total = load + timings["plan"] + timings["verify"]
    return {
        "hosts": hosts,
        "guests": guests,
        "instance_mib": round(size / 2**20, 1),
        "groups_note": "apps of 2-5 replicas; spread host/rack/site/none in turn",
        "placed": placed,
        "unplaced": len(report["unplaced"]),
        "load_s": round(load, 2),
        "load_cpu_s": round(load_cpu, 2),
        "plan_s": round(timings["plan"], 2),
        "verify_s": round(timings["verify"], 2),
        "plan_and_verify_cpu_s": round(cpu, 2),  # the CPU is shared: wall time can be longer
        "placements_per_s": round(placed / timings["plan"]),
        "end_to_end_per_s": round(placed / total),
        "vs_nomad_c1m": round(placed / timings["plan"] / 3750, 1),
        "hosts_used": report["hosts_used"],
        "lower_bound": report["lower_bound"]["hosts"],
        "ratio": report["ratio"],
    }


def online_section(hosts: int, guests: int, one_by_one: int) -> dict[str, Any]:
    """The online scheduler on one batch of plain replicas: bulk path vs one by one."""
    from podium.model import Resources  # noqa: PLC0415
    from podium.scheduler import (  # noqa: PLC0415
        FrameworkScheduler,
        GuestRequest,
        HostRow,
        HostTable,
        PlacementRequest,
        default_scheduler,
    )

    capacity = Resources(cpu=512, memory_mib=1 << 21, iops=200_000, net_mbps=100_000)
    rows = [HostRow(f"sim-{i:05d}", capacity, labels={"rack": f"r{i % 50}"}) for i in range(hosts)]
    table = HostTable.build(rows)
    batch = []
    for i in range(guests):
        app = i // 1000
        cpu, mem, iops, net = ONLINE_SHAPES[app % len(ONLINE_SHAPES)]
        request = Resources(cpu=cpu, memory_mib=mem, iops=iops, net_mbps=net)
        batch.append(GuestRequest(f"c1m-{app:04d}-{i % 1000}", request, f"c1m-{app:04d}"))
    bulk = default_scheduler()
    started = time.perf_counter()
    result = bulk.place(PlacementRequest(table, batch))
    bulk_s = time.perf_counter() - started
    single = FrameworkScheduler(bulk.filters, bulk.scores, bulk_min=None)
    few = batch[:one_by_one]
    started = time.perf_counter()
    slow = single.place(PlacementRequest(table, few))
    single_s = time.perf_counter() - started
    bulk_rate = len(result.placements) / bulk_s
    single_rate = len(slow.placements) / single_s
    return {
        "hosts": hosts,
        "guests": guests,
        "placed": len(result.placements),
        "bulk_s": round(bulk_s, 3),
        "bulk_per_s": round(bulk_rate),
        "one_by_one_guests": len(few),
        "one_by_one_s": round(single_s, 3),
        "one_by_one_per_s": round(single_rate),
        "ratio": round(bulk_rate / single_rate, 1),
    }


def packing_section(seed: int, guests: int) -> dict[str, Any]:
    runs = []
    small, large = (64, 262144, 40000, 25000), (96, 393216, 60000, 40000)
    cases = [
        ("identical 64c/256G", [small]),
        ("identical 96c/384G", [large]),
        ("mixed 64c/256G + 128c/1T", [small, (128, 1048576, 80000, 50000)]),
    ]
    for i, (label, kinds) in enumerate(cases * 2):
        rng = np.random.default_rng(seed + i)
        shapes = _cloud_shapes(rng, 40)
        demand = guests * 17 * 1024  # ~17 GiB per guest on average
        per_kind = max(int(demand / sum(k[1] for k in kinds) * 2.5), 10)
        hosts = []
        for j, kind in enumerate(kinds):
            hosts += [{**h, "name": f"k{j}-{h['name']}"} for h in _hosts(per_kind, kind)]
        parsed = parse_instance({"hosts": hosts, "guests": _apps(rng, guests, shapes)})
        report, timings = solve_parsed(parsed, "pack")
        runs.append({
            "instance": label, "guests": guests, "hosts": len(hosts),
            "unplaced": len(report["unplaced"]), "hosts_used": report["hosts_used"],
            "lower_bound": report["lower_bound"]["hosts"], "ratio": report["ratio"],
            "plan_s": round(timings["plan"], 2),
        })  # fmt: skip
    return {"runs": runs, "max_ratio": max(r["ratio"] for r in runs)}


def _small_instance(rng: np.random.Generator, index: int) -> dict[str, Any]:
    guests = int(rng.integers(12, 61))
    cap = (32, 131072, 20000, 10000)
    shapes = [s for s in _cloud_shapes(rng, 12) if s["cpu"] <= 8]
    out = _apps(rng, guests, shapes)
    for g in out[index % 3 :: 3]:
        g.pop("spread", None)  # fewer spreads on some
    demand = sum(g["request"]["memory_mib"] for g in out)
    hosts = max(int(demand / cap[1] * 1.5) + 3, 6)
    return {"hosts": _hosts(hosts, cap, per_rack=1, sites=5), "guests": out}


def cp_sat_optimum(instance: dict[str, Any], seconds: float) -> tuple[int | None, bool]:
    """Fewest hosts by CP-SAT (``None`` if none found); True if proven optimal."""
    from ortools.sat.python import cp_model  # noqa: PLC0415  (dev extra)

    hosts, guests = instance["hosts"], instance["guests"]
    dims = ("cpu", "memory_mib", "iops", "net_mbps")
    model = cp_model.CpModel()
    x = {
        (g, h): model.new_bool_var(f"x{g}_{h}")
        for g in range(len(guests))
        for h in range(len(hosts))
    }
    y = [model.new_bool_var(f"y{h}") for h in range(len(hosts))]
    for g in range(len(guests)):
        model.add_exactly_one(x[g, h] for h in range(len(hosts)))
    for h, host in enumerate(hosts):
        for d in dims:
            need = [(int(guests[g]["request"].get(d, 0)), x[g, h]) for g in range(len(guests))]
            model.add(sum(c * v for c, v in need if c) <= int(host["capacity"][d]) * y[h])
    apps: dict[tuple[str, str], list[int]] = {}
    for g, guest in enumerate(guests):
        if guest.get("spread"):
            apps.setdefault((guest["app"], guest["spread"]), []).append(g)
    for (_, level), members in apps.items():
        domains: dict[str, list[int]] = {}
        for h, host in enumerate(hosts):
            key = host["name"] if level == "host" else host["labels"][level]
            domains.setdefault(key, []).append(h)
        for rows in domains.values():
            model.add(sum(x[g, h] for g in members for h in rows) <= 1)
    for h in range(len(hosts) - 1):  # identical hosts: use them in order
        model.add(y[h] >= y[h + 1])
    model.minimize(sum(y))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 2
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, False
    return int(solver.objective_value), status == cp_model.OPTIMAL


def optimal_section(count: int, seed: int, seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        instance = _small_instance(rng, i)
        report, _ = solve_parsed(parse_instance(instance), "pack")
        optimum, proven = cp_sat_optimum(instance, seconds)
        rows.append({
            "guests": len(instance["guests"]), "planner": report["hosts_used"],
            "bound": report["lower_bound"]["hosts"], "unplaced": len(report["unplaced"]),
            "optimum": optimum, "proven": proven,
        })  # fmt: skip
    judged = [r for r in rows if r["proven"] and r["unplaced"] == 0]
    equal = sum(r["planner"] == r["optimum"] for r in judged)
    return {
        "instances": count,
        "proven_optimal": len(judged),
        "equal": equal,
        "fraction_equal": round(equal / len(judged), 3) if judged else None,
        "optimum_above_bound": sum(r["optimum"] > r["bound"] for r in judged),
        "worse_by": sorted(
            {r["planner"] - r["optimum"] for r in judged if r["planner"] != r["optimum"]}
        ),
        "cp_sat_seconds_limit": seconds,
    }


def summary(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}"]
    if p := results.get("planner"):
        lines.append(
            f"planner: {p['placed']:,}/{p['guests']:,} guests on {p['hosts']:,} hosts: "
            f"load {p['load_s']} s, plan {p['plan_s']} s ({p['placements_per_s']:,}/s, "
            f"{p['vs_nomad_c1m']}x Nomad C1M's 3,750/s), verify {p['verify_s']} s, "
            f"end to end {p['end_to_end_per_s']:,}/s; hosts used "
            f"{p['hosts_used']} vs bound {p['lower_bound']} (ratio {p['ratio']})"
        )
    if n := results.get("online"):
        lines.append(
            f"online: {n['placed']:,}/{n['guests']:,} plain replicas on {n['hosts']:,} hosts "
            f"in {n['bulk_s']} s ({n['bulk_per_s']:,}/s); one by one {n['one_by_one_per_s']:,}/s "
            f"({n['one_by_one_guests']:,} guests): {n['ratio']}x"
        )
    if k := results.get("packing"):
        for r in k["runs"]:
            lines.append(
                f"packing {r['instance']}: {r['hosts_used']} hosts / "
                f"bound {r['lower_bound']} = {r['ratio']}"
            )
        lines.append(f"packing worst ratio: {k['max_ratio']}")
    if c := results.get("c1m"):
        done = "all bound" if c.get("all_bound") else f"{c.get('bound', 0):,} bound"
        lines.append(
            f"c1m: {c['guests']:,} guests on {c['hosts']:,} hosts through the server: {done} "
            f"after {c.get('bound_s')} s ({c.get('binds_per_s')} binds/s; hosts registered "
            f"in {c.get('register_s')} s)"
        )
    if o := results.get("optimal"):
        lines.append(
            f"optimal: planner equals CP-SAT's proven optimum on "
            f"{o['equal']}/{o['proven_optimal']} "
            f"({o['fraction_equal']}) of {o['instances']} small instances"
        )
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"sections, comma-separated: {','.join(SECTIONS)}",
    )
    p.add_argument("--hosts", type=int, default=10_000, help="planner section: hosts")
    p.add_argument("--guests", type=int, default=1_000_000, help="planner section: guests")
    p.add_argument("--online-hosts", type=int, default=5000, help="online section: hosts")
    p.add_argument("--online-guests", type=int, default=100_000, help="online section: guests")
    p.add_argument(
        "--online-one-by-one", type=int, default=2000, help="online section: one-by-one guests"
    )
    p.add_argument("--packing-guests", type=int, default=20_000, help="guests per packing instance")
    p.add_argument("--small", type=int, default=50, help="optimal section: small instances")
    p.add_argument(
        "--cp-sat-seconds", type=float, default=20.0, help="CP-SAT time limit per instance"
    )
    p.add_argument("--c1m-hosts", type=int, default=5000, help="c1m section: simulated hosts")
    p.add_argument("--c1m-guests", type=int, default=1_000_000, help="c1m section: guests")
    p.add_argument("--c1m-timeout", type=float, default=300.0, help="c1m section: seconds")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.sections = [s for s in args.only.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(
            f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )
    return args


def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if "planner" in args.sections:
        results["planner"] = planner_section(args.hosts, args.guests, args.seed)
    if "online" in args.sections:
        results["online"] = online_section(
            args.online_hosts, args.online_guests, args.online_one_by_one
        )
    if "packing" in args.sections:
        results["packing"] = packing_section(args.seed, args.packing_guests)
    if "optimal" in args.sections:
        results["optimal"] = optimal_section(args.small, args.seed, args.cp_sat_seconds)
    if "c1m" in args.sections:
        import asyncio  # noqa: PLC0415

        import c1m  # noqa: PLC0415  (bench/c1m.py: this script's folder is on sys.path)

        results["c1m"] = asyncio.run(
            c1m.run(args.c1m_hosts, args.c1m_guests, 5000, args.c1m_timeout, lambda _: None)
        )
    return results


if __name__ == "__main__":
    arguments = parse()
    outcome = main(arguments)
    print(json.dumps(outcome) if arguments.json else summary(outcome))
