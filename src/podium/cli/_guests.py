"""podium guest ...: live migration and the serial console."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from podium.cli._common import ConfigOption, client_for, console, err_console, fail, run

guest_app = typer.Typer(
    help="Act on one guest: live migration, serial console.", no_args_is_help=True
)

FINAL = ("completed", "failed", "cancelled")
POLL = 0.2  # seconds between progress samples: smooth bar, light on the server


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _describe(record: dict[str, Any]) -> str:
    """One line of progress: what moved, what is left, how fast memory dirties."""
    progress = record.get("progress") or {}
    state = str(record.get("state", "?"))
    if state in ("pending", "preparing"):
        return f"{state}: {record.get('message') or 'waiting for the destination'}"
    if not progress:
        return state
    return (
        f"{_mib(progress.get('transferred', 0))} sent, "
        f"{_mib(progress.get('remaining', 0))} left, "
        f"dirty {_mib(progress.get('dirty_rate', 0))}/s, "
        f"expected downtime {progress.get('expected_downtime_ms', 0):.0f} ms"
    )


def _fraction(record: dict[str, Any]) -> float:
    progress = record.get("progress") or {}
    total = float(progress.get("total") or 0)
    if record.get("state") == "completed":
        return 1.0
    if total <= 0:
        return 0.0
    return min(1.0, 1.0 - float(progress.get("remaining", total)) / total)


def summary(record: dict[str, Any], running_since: float | None) -> dict[str, Any]:
    """Total time and downtime of a finished migration, from its record.

    The guest is paused from QEMU's switchover until the destination resumes it, which
    podium does only after the source process is gone and the binding moved: downtime =
    QEMU's own figure + the time from the commit of the move to the destination's report.
    """
    result = record.get("result") or {}
    started = record.get("started") or record.get("created") or 0.0
    finished = record.get("finished") or started
    qemu_downtime = float(result.get("downtime_ms") or 0.0)
    switchover = 0.0
    if running_since is not None and running_since >= finished:
        switchover = (running_since - finished) * 1000
    return {
        "guest": record.get("guest"),
        "id": record.get("id"),
        "state": record.get("state"),
        "source": record.get("source"),
        "target": record.get("target"),
        "total_s": round(max(0.0, finished - started), 3),
        "downtime_ms": round(qemu_downtime + switchover, 1),
        "qemu_downtime_ms": round(qemu_downtime, 1),
        "qemu_total_ms": round(float(result.get("qemu_total_ms") or 0.0), 1),
        "switchover_ms": round(switchover, 1),
        "transferred": int(result.get("transferred") or 0),
        "message": record.get("message", ""),
    }


async def _running_since(client: Any, guest: str, target: str, deadline: float) -> float | None:
    """When the destination reported the guest running (bounded wait)."""
    while time.monotonic() < deadline:
        view = await client.get("guests", guest)
        status = view.get("status", {})
        if status.get("host") == target and status.get("state") == "running":
            return float(status.get("since", 0.0))
        await asyncio.sleep(POLL)
    return None


async def follow_migration(
    client: Any, guest: str, *, timeout: float, show: bool
) -> tuple[dict[str, Any], float | None]:
    """Poll a migration until it ends, drawing a progress bar when ``show``."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.fields[guest]}[/]"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, disable=not show, transient=True) as bar:
        task = bar.add_task("starting", total=1.0, guest=guest)
        while True:
            record: dict[str, Any] = await client.migration(guest)
            bar.update(task, completed=_fraction(record), description=_describe(record))
            if record.get("state") in FINAL:
                break
            if time.monotonic() > deadline:
                fail(
                    f"migration of {guest} still {record.get('state')} after {timeout:g} s; "
                    f"it goes on: watch it with 'podium get guest {guest}'"
                )
            await asyncio.sleep(POLL)
    since = None
    if record.get("state") == "completed":
        since = await _running_since(client, guest, str(record.get("target")), deadline)
    return record, since


@guest_app.command("migrate")
def migrate(
    name: str,
    to: Annotated[
        str | None, typer.Option("--to", help="Destination host (default: placement picks)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the migration with a progress bar")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to follow before giving up")] = 600.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Live-migrate a running guest to another host (QEMU pre-copy over the fabric)."""

    async def body() -> tuple[dict[str, Any], float | None]:
        async with client_for(config) as client:
            record: dict[str, Any] = await client.migrate(name, to)
            if not wait:
                return record, None
            return await follow_migration(
                client, name, timeout=timeout, show=not json_out and err_console.is_terminal
            )

    record, since = run(body)
    if not wait:
        if json_out:
            print(json.dumps(record))
        else:
            console.print(
                f"migration {record.get('id')} of {name} to {record.get('target')}: "
                f"{record.get('state')}",
                highlight=False,
            )
        return
    result = summary(record, since)
    if json_out:
        print(json.dumps(result))
    elif result["state"] == "completed":
        console.print(
            f"guest/{name} migrated {result['source']} -> {result['target']} in "
            f"{result['total_s']:.2f} s, downtime {result['downtime_ms']:.0f} ms "
            f"(QEMU {result['qemu_downtime_ms']:.0f} ms + switchover "
            f"{result['switchover_ms']:.0f} ms), {_mib(result['transferred'])} sent",
            highlight=False,
        )
    if result["state"] != "completed":
        fail(f"migration of {name} {result['state']}: {result['message'] or 'no reason given'}")


@guest_app.command("console")
def console_log(
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing")] = False,
    config: ConfigOption = None,
) -> None:
    """Print a guest's serial console (the last 16 KiB its host captured)."""

    async def body() -> None:
        async with client_for(config) as client:
            shown = ""
            while True:
                data: dict[str, Any] = await client.console(name)
                text = str(data.get("text", ""))
                if not shown:
                    print(text, end="" if text.endswith("\n") or not text else "\n", flush=True)
                elif text != shown:
                    # The capture is a sliding tail: print what follows the overlap.
                    overlap = _overlap(shown, text)
                    print(text[overlap:], end="", flush=True)
                shown = text or shown
                if not follow:
                    return
                await asyncio.sleep(1.0)

    run(body)


def _overlap(old: str, new: str) -> int:
    """Where ``new`` continues ``old``: the end of ``old``'s last 256 chars inside ``new``."""
    anchor = old[-256:]
    at = new.rfind(anchor)
    return at + len(anchor) if at >= 0 else 0
