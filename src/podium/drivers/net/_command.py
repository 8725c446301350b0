"""Running a host networking tool (ovs-vsctl, ip, nft, sysctl) bounded, errors as NetworkError."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from podium.drivers.net._protocol import NetworkError


def run_tool(argv: Sequence[str], *, timeout: float, missing: str, stdin: str | None = None) -> str:
    """Run ``argv`` for at most ``timeout`` s and return its stdout.

    Raises :class:`NetworkError`: ``missing`` (what to install) when the tool is not
    there, the command line and its stderr when it fails or does not answer in time.
    """
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as err:
        raise NetworkError(f"{argv[0]} not found: {missing}") from err
    except subprocess.TimeoutExpired as err:
        raise NetworkError(f"{' '.join(argv)}: no answer within {timeout:g} s") from err
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        raise NetworkError(f"{' '.join(argv)}: {why}")
    return done.stdout
