"""podium backup ...: agentless backups of running guests, and restores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from podium.cli._common import ConfigOption, client_for, console, err_console, fail, run

backup_app = typer.Typer(
    help="Agentless backups: taken by the hypervisor while the guest runs.", no_args_is_help=True
)

FINAL = ("completed", "failed")


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _ago(t: float) -> str:
    seconds = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@backup_app.command("create")
def create(
    guest: str,
    full: Annotated[
        bool, typer.Option("--full", help="A full backup even when an incremental one would do")
    ] = False,
    replica: Annotated[
        bool,
        typer.Option(
            "--replica",
            help="Back up to the host's replica folder (the other site's storage, for DR) "
            "instead of its local backups folder; replica backups have their own chain",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until the backup is complete")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait")] = 1800.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Back up a running guest's disks (root and LUNs, at one point in time) through QEMU
    (incremental after the first full one to the same target)."""

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            mode, target = ("full" if full else "auto"), ("replica" if replica else "local")
            record: dict[str, Any] = await client.create_backup(guest, mode, target)
            deadline = time.monotonic() + timeout
            spin = wait and not json_out and err_console.is_terminal
            with err_console.status(f"backing up {guest}") if spin else contextlib.nullcontext():
                while wait and record.get("state") not in FINAL:
                    if time.monotonic() > deadline:
                        state = record.get("state")
                        fail(f"backup {record['id']} still {state} after {timeout:g} s")
                    await asyncio.sleep(0.3)
                    record = await client.backup(record["id"])
            return record

    record = run(body)
    if json_out:
        print(json.dumps(record))
    elif record.get("state") == "completed":
        console.print(
            f"backup/{record['id']} of {guest}: {record.get('mode')} "
            f"({record.get('target') or 'local'}), "
            f"{_size(int(record.get('bytes') or 0))} written, {record.get('path')}"
            + "".join(f", {v}: {p}" for v, p in sorted((record.get("volumes") or {}).items())),
            highlight=False,
        )
    elif not wait:
        console.print(f"backup/{record['id']} of {guest}: {record.get('state')}", highlight=False)
    if record.get("state") == "failed":
        fail(f"backup {record['id']} of {guest} failed: {record.get('message') or 'no reason'}")


@backup_app.command("list")
def list_backups(
    guest: Annotated[str | None, typer.Argument(help="Only this guest's backups")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    config: ConfigOption = None,
) -> None:
    """List backups, newest last."""
    if output not in ("table", "json"):
        fail(f"unknown output {output!r}: expected table or json")

    async def body() -> list[dict[str, Any]]:
        async with client_for(config) as client:
            items: list[dict[str, Any]] = await client.backups(guest)
            return items

    items = sorted(run(body), key=lambda b: (b.get("created", 0), b.get("id", "")))
    if output == "json":
        print(json.dumps({"items": items}, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "GUEST", "MODE", "TARGET", "STATE", "SIZE", "AGE", "PARENT"):
        table.add_column(column)
    for b in items:
        table.add_row(
            b.get("id", ""),
            b.get("guest", ""),
            b.get("mode") or b.get("requested_mode", ""),
            b.get("target") or "local",
            b.get("state", ""),
            _size(int(b.get("bytes") or 0)) if b.get("state") == "completed" else "-",
            _ago(float(b.get("created", 0))),
            b.get("parent") or "-",
        )
    console.print(table)


@backup_app.command("restore")
def restore(
    backup: str,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="Name of the restored guest (default: the original name)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a guest from a backup (fresh MAC/IP); it boots from the restored disk."""

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            answer: dict[str, Any] = await client.restore_backup(backup, as_name)
            return answer

    view = run(body).get("guest", {})
    console.print(f"guest/{view.get('name')} restored from backup/{backup}", highlight=False)
