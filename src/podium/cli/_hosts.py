"""podium host ...: join tokens, cordon, uncordon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli._common import ConfigOption, client_for, console, run

host_app = typer.Typer(help="Manage hosts: join tokens, cordon, uncordon.", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens for new hosts.", no_args_is_help=True)
host_app.add_typer(token_app, name="token")


def write_secret(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


@token_app.command("create")
def token_create(
    ttl: Annotated[int, typer.Option(help="Seconds the token stays valid (0: forever)")] = 3600,
    output: Annotated[
        Path | None,
        typer.Option(help="Write DIR/token and DIR/ca.pem for `podium agent` instead of printing"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Mint a join token: a new host's agent registers with it once, then gets its own."""

    async def body() -> tuple[dict[str, Any], str | None, str]:
        async with client_for(config) as client:
            result: dict[str, Any] = await client.create_token("join", ttl=ttl)
            return result, client.config.ca_pem, client.config.server

    result, ca_pem, server = run(body)
    if output is None:
        print(result["token"])
        return
    write_secret(output / "token", result["token"] + "\n")
    if ca_pem:
        (output / "ca.pem").write_text(ca_pem)
    console.print(
        f"wrote {output / 'token'}; on the new host run:\n  podium agent --server {server} "
        f"--token-file {output / 'token'} --name HOSTNAME",
        highlight=False,
    )


def _cordon(name: str, cordoned: bool, config: str | None) -> None:
    async def body() -> None:
        async with client_for(config) as client:
            await client.cordon(name, cordoned)

    run(body)
    console.print(f"host/{name} {'cordoned' if cordoned else 'uncordoned'}", highlight=False)


@host_app.command("cordon")
def cordon(name: str, config: ConfigOption = None) -> None:
    """Stop placing new guests on a host (running guests stay)."""
    _cordon(name, True, config)


@host_app.command("uncordon")
def uncordon(name: str, config: ConfigOption = None) -> None:
    """Let the scheduler place guests on a host again."""
    _cordon(name, False, config)


@host_app.command("drain")
def drain(
    name: str,
    wait: Annotated[bool, typer.Option(help="Wait until no guest is left on the host")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before giving up")] = 1800.0,
    config: ConfigOption = None,
) -> None:
    """Cordon a host and live-migrate every guest away (placement picks where)."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from podium.cli._common import err_console, fail  # noqa: PLC0415

    async def body() -> tuple[int, int]:
        async with client_for(config) as client:
            answer: dict[str, Any] = await client.drain(name)
            total = int(answer.get("guests", 0))
            if not wait:
                return total, total
            deadline = time.monotonic() + timeout
            show = err_console.is_terminal
            with Progress(
                TextColumn(f"draining [bold]{name}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=err_console,
                disable=not show,
                transient=True,
            ) as bar:
                task = bar.add_task("", total=max(total, 1))
                while True:
                    host = await client.get("hosts", name)
                    left = int(host.get("status", {}).get("guests", 0))
                    migrations = [
                        m
                        for m in await client.migrations()
                        if m.get("source") == name and m.get("state") not in ("completed",)
                    ]
                    active = [m for m in migrations if m.get("state") not in ("failed",)]
                    bar.update(
                        task,
                        completed=max(0, total - left),
                        description=f"{len(active)} migrating",
                    )
                    if left == 0:
                        return total, left
                    if time.monotonic() > deadline:
                        failed = [m for m in migrations if m.get("state") == "failed"]
                        why = "; ".join(f"{m['guest']}: {m.get('message')}" for m in failed[:3])
                        fail(
                            f"host {name} still holds {left} guest(s) after {timeout:g} s"
                            + (f" ({why})" if why else "")
                            + "; the drain goes on"
                        )
                    await asyncio.sleep(0.5)

    total, left = run(body)
    if wait:
        console.print(f"host/{name} drained: {total} guest(s) moved away", highlight=False)
    else:
        console.print(f"host/{name} draining: {left} guest(s) to move", highlight=False)
