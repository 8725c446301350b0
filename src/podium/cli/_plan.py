"""`podium plan`: the offline placement planner and capacity what-if (no server needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli._common import err_console, fail

OBJECTIVES = ("pack", "balance")


def plan(
    input_file: Annotated[
        Path, typer.Option("--input", "-i", help="Instance JSON: hosts and guests (DESIGN.md)")
    ],
    output_file: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the placements JSON")
    ],
    objective: Annotated[
        str,
        typer.Option(help="pack: as few hosts as it can; balance: even the load over all hosts"),
    ] = "pack",
) -> None:
    """Place an instance's guests on its hosts, offline, and check the result.

    Writes {"placements": {guest: host}, "unplaced": [{name, reason}], "hosts_used",
    "lower_bound": {"hosts", "per_dimension"}, "ratio", "objective", "seconds"}; every
    placement fits every dimension and keeps every spread (checked before writing).
    """
    from podium.scheduler._check import solve_parsed  # noqa: PLC0415  (numpy: load lazily)
    from podium.scheduler._instance import InstanceError, parse_instance  # noqa: PLC0415

    if objective not in OBJECTIVES:
        fail(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    started = time.perf_counter()
    data = _read(input_file)
    try:
        instance = parse_instance(data)
    except InstanceError as err:
        fail(f"{input_file}: {err}")
    loaded = time.perf_counter() - started
    err_console.print(
        f"loaded {len(instance.hosts):,} hosts and {len(instance):,} guests in {loaded:.2f} s; "
        f"planning ({objective})...",
        highlight=False,
    )
    report, timings = solve_parsed(instance, objective)
    try:
        output_file.write_text(json.dumps(report, indent=1 if len(instance) <= 10_000 else None))
    except OSError as err:
        fail(f"cannot write {output_file}: {err.strerror or err}; choose a writable --output path")
    placed = len(report["placements"])
    rate = placed / timings["plan"] if timings["plan"] > 0 else float("inf")
    bound = report["lower_bound"]
    per = ", ".join(f"{k} {v}" for k, v in bound["per_dimension"].items())
    err_console.print(
        f"placed {placed:,}/{len(instance):,} guests on {report['hosts_used']:,} hosts "
        f"(lower bound {bound['hosts']:,}: {per}; ratio {report['ratio']}); "
        f"plan {timings['plan']:.2f} s ({rate:,.0f}/s), verified in {timings['verify']:.2f} s; "
        f"{len(report['unplaced']):,} unplaced; wrote {output_file}",
        highlight=False,
    )


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        fail(f"{path}: no such file; give --input the path of an instance JSON file")
    except OSError as err:
        fail(f"{path}: cannot read it ({err.strerror or err})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        fail(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}")
