"""podium rebalance: what the rebalancer would move, and why; or run one pass now."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from podium.cli._common import ConfigOption, client_for, console, fail, run


def rebalance(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan only; request no migration")
    ] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    config: ConfigOption = None,
) -> None:
    """Rebalance now by live migration, or show the plan and why with --dry-run.

    One pass moves guests off hot hosts, next to heavy talkers, toward balance, or off a
    host it can free, within the server's migration budget and hysteresis window."""
    if output not in ("table", "json"):
        fail(f"unknown output {output!r}: expected table or json")

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            answer: dict[str, Any] = (
                await client.rebalance_plan() if dry_run else await client.rebalance()
            )
            return answer

    plan = run(body)
    if output == "json":
        print(json.dumps(plan, indent=2))
        return
    moves = plan.get("moves", [])
    if moves:
        table = Table(box=None, pad_edge=False)
        for column in ("GUEST", "FROM", "TO", "REASON", "BENEFIT", "COST"):
            table.add_column(column)
        for m in moves:
            table.add_row(
                m["guest"], m["from"], m["to"], m["reason"], f"{m['benefit']:.1f}",
                f"{m['cost']:.0f} s",
            )  # fmt: skip
        console.print(table)
    verb = "would request" if dry_run else "requested"
    made = len(moves) if dry_run else len(plan.get("requested", []))
    console.print(
        f"{verb} {made} migrations (budget {plan.get('budget', 0)}); hot hosts "
        f"{plan.get('hot_before', 0)} -> {plan.get('hot_after', 0)}; imbalance "
        f"{plan.get('imbalance_before', 0):.3f} -> {plan.get('imbalance_after', 0):.3f}",
        highlight=False,
    )
    for note in [*plan.get("notes", []), *plan.get("skipped", [])]:
        console.print(f"  {note}", highlight=False)
