"""apply, get, delete, events."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli._common import ConfigOption, client_for, console, fail, run
from podium.cli._output import OUTPUTS, render, render_event
from podium.model import KIND_NAMES, KINDS, Kind, ManifestError, parse_manifest_text


def _kind(name: str) -> Kind:
    kind = KINDS.get(name) or KINDS.get(name.lower())
    if kind is None:
        fail(f"unknown kind {name!r}: expected one of {KIND_NAMES}")
    return kind


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except OSError as err:
        fail(f"cannot read manifest {path}: {err.strerror}")


def apply(
    files: Annotated[
        list[str],
        typer.Option(
            "-f",
            "--filename",
            help="Manifest file (YAML, multi-document); '-' for stdin. Repeatable.",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Create or update objects from YAML manifests: all documents or none."""
    documents: list[dict[str, Any]] = []
    sources = []
    for path in files:
        text, source = _read(path)
        try:
            manifests = parse_manifest_text(text, source=source)
        except ManifestError as err:
            fail(str(err))
        documents += [{"kind": m.kind.value, "name": m.name, "spec": m.spec} for m in manifests]
        sources.append(source)

    async def body() -> dict[str, Any]:
        async with client_for(config) as client:
            result: dict[str, Any] = await client.apply(documents, source=", ".join(sources))
            return result

    result = run(body)
    for item in result["results"]:
        console.print(f"{item['kind'].lower()}/{item['name']} {item['action']}", highlight=False)


def get(
    kind: Annotated[str, typer.Argument(help="apps, guests or hosts")],
    name: Annotated[str | None, typer.Argument(help="One object's name")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table, json or yaml")] = "table",
    config: ConfigOption = None,
) -> None:
    """Show objects with their status. `-o json` prints {"items": [...]}."""
    if output not in OUTPUTS:
        fail(f"unknown output {output!r}: expected one of {', '.join(OUTPUTS)}")
    k = _kind(kind)

    async def body() -> list[dict[str, Any]]:
        async with client_for(config) as client:
            if name:
                return [await client.get(k.value, name)]
            items, _ = await client.list(k.value)
            return list(items)

    render(k.value, run(body), output, console)


def delete(
    kind: Annotated[str, typer.Argument(help="app, guest or host")],
    name: Annotated[str, typer.Argument(help="The object's name")],
    config: ConfigOption = None,
) -> None:
    """Delete an object (an App takes its guests with it)."""
    k = _kind(kind)

    async def body() -> None:
        async with client_for(config) as client:
            await client.delete(k.value, name)

    run(body)
    console.print(f"{k.value.lower()}/{name} deleted", highlight=False)


def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events")
    ] = False,
    limit: Annotated[int, typer.Option(help="Show the last N events (0: all)")] = 50,
    output: Annotated[
        str, typer.Option("-o", "--output", help="text or json (one per line)")
    ] = "text",
    config: ConfigOption = None,
) -> None:
    """Show cluster events (host lost, guest rebound, ...), oldest first."""

    def show(event: dict[str, Any]) -> None:
        if output == "json":
            print(json.dumps(event), flush=True)
        else:
            render_event(event, console)

    async def body() -> None:
        async with client_for(config) as client:
            items, revision = await client.events(limit=limit)
            for event in items:
                show(event)
            if not follow:
                return
            async for line in client.watch_events(from_revision=revision + 1):
                if line.get("type") == "EVENT":
                    show(line["event"])

    run(body)
