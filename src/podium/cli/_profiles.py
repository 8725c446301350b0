"""podium profile ...: a server's software-defined identity, where it lives, and its clones."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from podium.cli._common import ConfigOption, client_for, console, err_console, fail, run
from podium.model import Spread

profile_app = typer.Typer(
    help="Server profiles: MACs, WWNs, IPs and VLANs that move with their guest.",
    no_args_is_help=True,
)

CLONE_STEP = 10  # clones per request: the bar moves, and each request stays small


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _where(status: dict[str, Any]) -> str:
    guest = status.get("guest")
    if not guest:
        return "worn by no guest"
    host = status.get("host")
    state = status.get("guest_state") or status.get("state") or "-"
    site = f" (site {status['site']})" if status.get("site") else ""
    place = f"on host {host}{site}" if host else "not placed"
    return f"worn by guest {guest}, {state} {place}"


def render_profile(view: dict[str, Any]) -> None:
    """The realised identity of one profile, and where it lives now."""
    status = view.get("status", {})
    identity = status.get("identity") or {}
    console.print(f"[bold]Profile {view['name']}[/]: {_where(status)}", highlight=False)
    nics = identity.get("nics", [])
    if nics:
        table = _table("NIC", "NETWORK", "VLAN", "MAC", "IP", "GATEWAY")
        for i, nic in enumerate(nics):
            table.add_row(
                str(i),
                nic.get("network") or "-",
                str(nic.get("vlan") or "-"),
                nic.get("mac", "-"),
                nic.get("ip") or "-",
                nic.get("gw") or "-",
            )
        console.print(table)
    for i, hba in enumerate(identity.get("hbas", [])):
        console.print(f"HBA {i}: WWPN {hba.get('wwpn')}  WWNN {hba.get('wwnn')}", highlight=False)
        table = _table("  LUN", "VOLUME", "WWN", "SERIAL", "SIZE")
        for lun in hba.get("luns", []):
            table.add_row(
                f"  {lun.get('lun')}",
                lun.get("volume", "-"),
                lun.get("wwn", "-"),
                lun.get("serial", "-"),
                f"{lun.get('size_gib', 0):g} GiB",
            )
        console.print(table)
    if identity.get("boot"):
        console.print(f"boot: {', '.join(identity['boot'])}", highlight=False)


@profile_app.command("show")
def show(
    name: str,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    config: ConfigOption = None,
) -> None:
    """Show a profile's realised identity (MACs, IPs, VLANs, WWNs) and where it lives now."""
    if output not in ("table", "json"):
        fail(f"unknown output {output!r}: expected table or json")

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            view: dict[str, Any] = await client.get("profile", name)
            return view

    view = run(body)
    if output == "json":
        print(json.dumps(view, indent=2))
    else:
        render_profile(view)


@profile_app.command("clone")
def clone(
    name: str,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="How many")] = 1,
    spread: Annotated[
        Spread | None,
        typer.Option(help="The clones' guests never share this domain: host, rack or site"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was made as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Clone a profile and its guest N times, each with fresh addresses from the same pools."""

    async def body() -> dict[str, list[str]]:
        made: dict[str, list[str]] = {"profiles": [], "guests": []}
        columns = (
            TextColumn(f"cloning {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        show_bar = not json_out and err_console.is_terminal
        async with client_for(config) as client:
            with Progress(*columns, console=err_console, disable=not show_bar) as bar:
                task = bar.add_task("clone", total=count)
                while len(made["profiles"]) < count:  # bounded: each call makes >= 1 or fails
                    step = min(CLONE_STEP, count - len(made["profiles"]))
                    answer = await client.clone_profile(
                        name, step, spread.value if spread else None
                    )
                    if not answer.get("profiles"):
                        fail(f"cloning {name}: the server made no clone")
                    made["profiles"] += answer["profiles"]
                    made["guests"] += answer.get("guests", [])
                    bar.update(task, completed=len(made["profiles"]))
        return made

    made = run(body)
    if json_out:
        print(json.dumps({"source": name, **made}))
        return
    console.print(
        f"profile/{name} cloned {len(made['profiles'])}x: {', '.join(made['profiles'])}",
        highlight=False,
    )
    if made["guests"]:
        console.print(f"guests: {', '.join(made['guests'])}", highlight=False)
