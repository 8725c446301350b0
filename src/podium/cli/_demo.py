"""podium demo: rich progress over podium.demo.run_demo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from podium.cli._common import console, fail


def demo(
    hosts: Annotated[
        int | None,
        typer.Option(min=2, max=500, help="Hosts to start (default: 8 sim, 3 qemu)"),
    ] = None,
    guests: Annotated[
        int | None,
        typer.Option(min=1, max=20000, help="Guests to deploy (default: 40 sim, 6 qemu)"),
    ] = None,
    driver: Annotated[
        str, typer.Option(help="sim (simulated hosts) or qemu (real guests in a lab)")
    ] = "sim",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable report only")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the store, TLS files and logs here (default: a temp dir, removed)"),
    ] = None,
    host_ttl: Annotated[int, typer.Option(min=1, help="Host lease TTL, seconds")] = 3,
) -> None:
    """Start a server on SQLite and N hosts, deploy apps, kill a host, show the failover.

    With ``--driver qemu`` the hosts are a lab of network namespaces running real QEMU
    guests, and the demo also pings them, live-migrates one and backs one up.
    """
    from podium.demo import DemoError, default_data_dir, run_demo  # noqa: PLC0415

    if driver not in ("sim", "qemu"):
        fail(f"unknown --driver {driver!r}: expected sim or qemu")
    qemu = driver == "qemu"
    hosts = hosts or (3 if qemu else 8)
    guests = guests or (6 if qemu else 40)

    data_dir = data_dir or default_data_dir()
    with Progress(
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=json_output,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            report = asyncio.run(
                run_demo(
                    hosts=hosts, guests=guests, driver=driver, data_dir=data_dir,
                    host_ttl=host_ttl, progress=progress,
                )
            )  # fmt: skip
        except DemoError as err:
            fail(str(err))
    if json_output:
        print(json.dumps(report.to_json(), indent=2))
        return
    table = Table(title="podium demo", show_header=False, box=None)
    rows = [
        ("hosts", str(report.hosts)),
        ("apps", ", ".join(f"{k} ({v} replicas)" for k, v in report.apps.items())),
        ("guests running", f"{report.guests_running}/{report.guests_total}"),
        ("all started in", f"{report.initial_start_seconds:.2f} s"),
        ("killed host", f"{report.failed_host} ({report.failed_host_guests} guests)"),
        (
            "host declared lost after",
            f"{report.detection_seconds:.2f} s (lease TTL {report.host_ttl_seconds} s)",
        ),
        ("failover complete after", f"{report.failover_seconds:.2f} s"),
        ("double runs seen", str(report.double_runs_seen)),
        *_qemu_rows(report.extra),
        ("store", report.store + ("" if data_dir else " (a temp dir, removed)")),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}", value)
    console.print(table)
    console.print("[bold]events of the failover[/] (podium events shows them all):")
    for line in report.events:
        console.print(f"  {line}", highlight=False)


def _qemu_rows(extra: dict[str, Any]) -> list[tuple[str, str]]:
    """Report lines only the qemu demo has: ping, live migration, backup."""
    rows = []
    if "guests_answering_ping" in extra:
        rows.append(("guests answering ping", str(extra["guests_answering_ping"])))
    if m := extra.get("migration"):
        rows.append((
            "live migration",
            f"{m['guest']} {m['from']} -> {m['to']} in {m['total_seconds']:.2f} s, QEMU "
            f"downtime {m['qemu_downtime_ms']} ms, {m['transferred_mib']} MiB",
        ))  # fmt: skip
    if b := extra.get("backup"):
        rows.append(("agentless backup", f"{b['id']} ({b['mode']}, {b['bytes']} bytes)"))
    return rows
