"""Shared CLI plumbing: config option, async runner, one-line errors."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")


def _width() -> int | None:
    # A pipe or a log gets long lines rather than tables folded at rich's default of 80.
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 200


console = Console(width=_width())
err_console = Console(stderr=True, width=_width())

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="PODIUM_CONFIG",
        help="Client config (admin.conf). Default: $PODIUM_CONFIG, then ~/.config/podium/config.",
        show_envvar=True,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; turn known errors into one-line messages."""
    from podium.client import ClientError  # noqa: PLC0415
    from podium.model import ManifestError  # noqa: PLC0415

    async def main() -> T:
        return await coro_fn()

    try:
        return asyncio.run(main())
    except (ClientError, ManifestError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        sys.exit(130)


def client_for(config: str | None) -> Any:
    """An ``AsyncPodiumClient`` for the resolved config (errors are ClientError)."""
    from podium.client import AsyncPodiumClient, ClientConfig  # noqa: PLC0415

    return AsyncPodiumClient(ClientConfig.load(config))
