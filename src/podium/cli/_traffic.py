"""podium traffic: the busiest guest pairs, as the agents measure them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from podium.cli._common import ConfigOption, client_for, console, fail, run


def rate_text(bytes_per_s: float) -> str:
    """``1.5 MB/s``-style text (decimal units, as network rates are quoted)."""
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= size:
            return f"{bytes_per_s / size:.1f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def traffic(
    top: Annotated[int, typer.Option(help="Show this many of the busiest pairs (0: all)")] = 20,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    config: ConfigOption = None,
) -> None:
    """Show the traffic between guests (bytes/s, both directions), busiest pairs first."""
    if output not in ("table", "json"):
        fail(f"unknown output {output!r}: expected table or json")
    if top < 0:
        fail(f"--top {top}: expected 0 (all) or a positive count")

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            matrix: dict[str, Any] = await client.traffic()
            return matrix

    matrix = run(body)
    pairs = matrix.get("pairs", [])[: top or None]
    if output == "json":
        print(json.dumps({**matrix, "pairs": pairs}, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("GUEST A", "GUEST B", "RATE", "SEEN ON"):
        table.add_column(column)
    for p in pairs:
        table.add_row(p["a"], p["b"], rate_text(float(p["bytes_per_s"])), ", ".join(p["hosts"]))
    console.print(table)
    stale = [h["host"] for h in matrix.get("hosts", []) if h.get("stale")]
    if not pairs:
        console.print("no traffic between guests reported", highlight=False)
    if stale:
        console.print(f"stale reports (left out): {', '.join(stale)}", highlight=False)
