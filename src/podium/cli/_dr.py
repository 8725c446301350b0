"""podium dr ...: site disaster recovery (failover, drills, failback) and its reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from podium.cli._common import ConfigOption, client_for, console, err_console, fail, run

dr_app = typer.Typer(
    help="Site disaster recovery: protected guests move to the other site.", no_args_is_help=True
)

JSON = dict[str, Any]
FINAL = ("completed", "failed")
POLL = 0.5  # seconds between looks at the final replicas

FromOption = Annotated[str, typer.Option("--from", help="The site guests leave")]
ToOption = Annotated[str, typer.Option("--to", help="The site they come up on")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON")]


def read_map(path: Path | None) -> JSON:
    """The map file as a dict, checked (one-line errors; ``None``: an empty map)."""
    if path is None:
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        fail(f"cannot read the map {path}: {err.strerror}")
    except yaml.YAMLError as err:
        fail(f"the map {path} is not YAML: {str(err).splitlines()[0]}")
    from podium.state import parse_map  # noqa: PLC0415  (the server checks it again)

    try:
        return parse_map(raw).model_dump()
    except ValueError as err:
        fail(f"{path}: {err}")


MapOption = Annotated[
    Path | None, typer.Option("--map", help="The DR map (YAML: networks, ips, test_networks)")
]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def render(report: JSON) -> None:
    """The report as a table: per guest, recovered or why not, replica point, loss vs RPO."""
    table = Table(box=None, pad_edge=False)
    for column in ("GUEST", "PROFILE", "RESULT", "REPLICA POINT", "LOSS / RPO", "MOVED"):
        table.add_column(column)
    for line in report.get("guests", []):
        if line.get("already"):
            result = f"[green]already[/] {line.get('copy') or ''}".rstrip()
        elif line["recovered"]:
            result = f"[green]recovered[/] {line.get('copy') or ''}".rstrip()
        else:
            result = f"[red]not recovered[/]: {line['reason']}"
        loss = "-"
        if line.get("loss_s") is not None:
            ok = "[green]within[/]" if line.get("within_rpo") else "[red]over[/]"
            loss = f"{line['loss_s']:.0f} s / {line.get('rpo_s')} s {ok}"
        moved = [f"{a}->{b}" for a, b in (line.get("networks") or {}).items()]
        moved += [f"{a}->{b or 'none'}" for a, b in (line.get("ips") or {}).items()]
        table.add_row(
            line["guest"],
            line.get("profile") or "-",
            result,
            _when(line.get("point")),
            loss,
            ", ".join(moved) or "-",
        )
    console.print(table)
    worst = report.get("max_loss_s")
    console.print(
        f"{report['operation']} {report['from']} -> {report['to']}: "
        f"{report['recovered']} recovered, {report['not_recovered']} not recovered, "
        f"{report.get('already', 0)} already"
        + (f"; worst loss window {worst:.0f} s" if worst is not None else ""),
        highlight=False,
    )


def _finish(report: JSON, json_out: bool) -> None:
    if json_out:
        print(json.dumps(report))
    else:
        render(report)
    if report.get("not_recovered"):
        raise typer.Exit(2)


@dr_app.command("failover")
def failover(
    from_site: FromOption,
    to_site: ToOption,
    map_file: MapOption = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Recover a failed site's protected guests on another site from their replicas.

    Refused while a host of the failed site lives (use podium dr test to drill). Exits 2
    when some guest was not recovered.
    """
    dr_map = read_map(map_file)

    async def body() -> JSON:
        async with client_for(config) as client:
            report: JSON = await client.dr_failover(from_site, to_site, dr_map)
            return report

    _finish(run(body), json_out)


@dr_app.command("test")
def test(
    from_site: FromOption,
    to_site: ToOption,
    map_file: MapOption = None,
    cleanup: Annotated[
        bool, typer.Option("--cleanup", help="Delete the drill's copies (and nothing else)")
    ] = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Drill: copies of the site's protected guests on isolated networks.

    Production is never written; --cleanup deletes the copies (and nothing else).
    """
    if not cleanup and map_file is None:
        fail("podium dr test needs --map FILE with test_networks (see examples/dr/map.yaml)")
    dr_map = read_map(map_file)

    async def body() -> JSON:
        async with client_for(config) as client:
            if cleanup:
                done: JSON = await client.dr_test_cleanup(from_site, to_site)
                return done
            report: JSON = await client.dr_test(from_site, to_site, dr_map)
            return report

    out = run(body)
    if not cleanup:
        _finish(out, json_out)
    elif json_out:
        print(json.dumps(out))
    else:
        for item in out.get("kept", []):
            err_console.print(f"kept {item['name']}: {item['reason']}", highlight=False)
        console.print(f"deleted {', '.join(out['deleted']) or 'nothing'}", highlight=False)


async def wait_for_finals(
    client: Any, backups: list[JSON], timeout: float, *, show: bool
) -> list[JSON]:
    """Poll each final replica until it is completed or failed; the final records."""
    deadline = time.monotonic() + timeout
    done: dict[str, JSON] = {}
    with Progress(
        TextColumn("final replicas"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show,
    ) as progress:
        task = progress.add_task("sync", total=len(backups))
        while len(done) < len(backups):
            for item in backups:
                if item["backup"] in done:
                    continue
                record: JSON = await client.backup(item["backup"])
                if record.get("state") in FINAL:
                    done[item["backup"]] = record
                    progress.advance(task)
            if len(done) == len(backups):
                break
            if time.monotonic() > deadline:
                left = [b["backup"] for b in backups if b["backup"] not in done]
                fail(f"final replicas not done after {timeout:g} s: {', '.join(left)}")
            await asyncio.sleep(POLL)
    return [done[b["backup"]] for b in backups]


async def wait_stopped(client: Any, guests: list[str], timeout: float) -> None:
    """Poll until each guest reports stopped (bounded by ``timeout``); failback then
    refuses any that still runs, so a guest never runs on both sites."""
    deadline = time.monotonic() + timeout
    left = set(guests)
    while left and time.monotonic() < deadline:
        for name in sorted(left):
            view: JSON = await client.get("guest", name)
            if view.get("status", {}).get("state") == "stopped":
                left.discard(name)
        if left:
            await asyncio.sleep(POLL)
    for name in sorted(left):
        err_console.print(f"{name} did not stop within {timeout:g} s; it stays where it is")


@dr_app.command("failback")
def failback(
    from_site: FromOption,
    to_site: ToOption,
    map_file: MapOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the final replicas")] = 3600.0,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Move guests back to their site, both sites up (the map read backwards).

    Asks for a final replica of each, waits for them, stops each guest on --from (what
    it writes after its final replica is the loss window), waits for the stops, then
    re-creates each guest on --to from its final replica. Exits 2 when some guest was
    not moved.
    """
    dr_map = read_map(map_file)

    async def body() -> JSON:
        async with client_for(config) as client:
            sync: JSON = await client.dr_failback_sync(from_site, to_site)
            for item in sync.get("skipped", []):
                err_console.print(f"no final replica of {item['guest']}: {item['reason']}")
            show = not json_out and err_console.is_terminal
            finals = await wait_for_finals(client, sync["backups"], timeout, show=show)
            ids = [r["id"] for r in finals if r.get("state") == "completed"]
            stop: JSON = await client.dr_failback_stop(from_site, to_site, ids)
            for item in stop.get("skipped", []):
                err_console.print(f"not stopped: {item['guest']}: {item['reason']}")
            await wait_stopped(client, stop.get("stopping", []), timeout)
            report: JSON = await client.dr_failback(from_site, to_site, ids, dr_map)
            return report

    _finish(run(body), json_out)
