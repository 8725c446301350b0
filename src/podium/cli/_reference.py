"""Generate the CLI reference (docs/cli.md) from the CLI itself."""

from __future__ import annotations

import click
import typer


def _walk(cmd: click.Command, path: list[str], out: list[str]) -> None:
    ctx = click.Context(cmd, info_name=" ".join(path))
    if not cmd.hidden:
        out.append(f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`\n")
        out.append("```text")
        out.append(cmd.get_help(ctx).rstrip().replace("\u2500", "-"))
        out.append("```\n")
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                _walk(sub, [*path, name], out)


def cli_reference(app: typer.Typer) -> str:
    """Markdown with the help text of every command, generated, never hand-edited."""
    out = [
        "# podium CLI reference",
        "",
        "Generated from the CLI by `podium reference > docs/cli.md`; a test keeps it current.",
        "",
    ]
    _walk(typer.main.get_command(app), ["podium"], out)
    return "\n".join(out) + "\n"
