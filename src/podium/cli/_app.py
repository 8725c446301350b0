"""The `podium` command: one typer app, subcommands from small modules."""

from __future__ import annotations

from typing import Annotated

import typer

from podium import __version__
from podium.cli import _daemons, _objects
from podium.cli._backups import backup_app
from podium.cli._demo import demo
from podium.cli._dr import dr_app
from podium.cli._guests import guest_app
from podium.cli._hosts import host_app
from podium.cli._image import image_app
from podium.cli._lab import lab_app
from podium.cli._plan import plan
from podium.cli._profiles import profile_app
from podium.cli._rebalance import rebalance
from podium.cli._traffic import traffic

app = typer.Typer(
    name="podium",
    help="Conduct a fleet of Linux servers as one system: guests, hosts, networks, storage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"podium {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    """podium: a control plane for VMs on commodity servers."""


app.command()(demo)
app.command()(_daemons.server)
app.command()(_daemons.agent)
app.command()(_objects.apply)
app.command()(_objects.get)
app.command()(_objects.delete)
app.command()(_objects.events)
app.command()(traffic)
app.command()(rebalance)
app.command()(plan)
app.add_typer(guest_app, name="guest")
app.add_typer(host_app, name="host")
app.add_typer(backup_app, name="backup")
app.add_typer(profile_app, name="profile")
app.add_typer(dr_app, name="dr")
app.add_typer(image_app, name="image")
app.add_typer(lab_app, name="lab")


@app.command(hidden=True)
def reference() -> None:
    """Print the CLI reference as Markdown (docs/cli.md)."""
    from podium.cli._reference import cli_reference  # noqa: PLC0415

    print(cli_reference(app), end="")


def main() -> None:
    """Console-script entry point."""
    app()
