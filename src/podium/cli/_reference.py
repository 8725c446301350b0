"""Generate the CLI reference (docs/cli.md) from the CLI itself."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

WIDTH = "100"  # fixed, so the generated file does not depend on the terminal


def _paths(cmd: Any, path: list[str]) -> list[list[str]]:
    # typer vendors its own click: walk the command tree by duck typing
    found = [] if cmd.hidden else [path]
    for name in sorted(getattr(cmd, "commands", {})):
        found += _paths(cmd.commands[name], [*path, name])
    return found


def cli_reference(app: typer.Typer) -> str:
    """Markdown with the ``--help`` of every command, generated, never hand-edited."""
    runner = CliRunner()
    env = {"COLUMNS": WIDTH, "TERM": "dumb", "NO_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}
    out = [
        "# podium CLI reference",
        "",
        "Generated from the CLI by `podium reference > docs/cli.md`; a test keeps it current.",
        "",
    ]
    for path in _paths(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], env=env, prog_name="podium")
        heading = "#" * min(len(path) + 2, 4)
        out += [f"{heading} `{' '.join(['podium', *path])}`", "", "```text"]
        out += [line.rstrip() for line in result.output.strip("\n").splitlines()]
        out += ["```", ""]
    return "\n".join(out)
