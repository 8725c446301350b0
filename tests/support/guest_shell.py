"""Run a command inside a tiny guest through its serial console socket.

The tiny image keeps a root shell on its serial port (``ttyS0``); QEMU exposes that
port as ``serial.sock`` in the guest's state folder (and logs it to ``console.log``).
The tests use it to ping from one guest to another.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path


def guest_run(folder: Path, command: str, *, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``command`` in the guest's shell; return its exit status and output.

    Bounded by ``timeout``; raises ``TimeoutError`` if the guest does not answer.
    """
    marker = f"PODIUM-RC-{secrets.token_hex(4)}"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        sock.connect(str(folder / "serial.sock"))
        # Leading newline: finish whatever line the shell may hold; the marker is split
        # so that the echo of the command itself never matches.
        sock.sendall(f"\n{command}; echo {marker[:6]}''{marker[6:]}=$?\n".encode())
        received = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
            text = received.decode(errors="replace")
            at = text.find(marker + "=")
            if at >= 0:
                tail = text[at + len(marker) + 1 :]
                digits = "".join(c for c in tail[:4] if c.isdigit())
                if digits and len(tail) > len(digits):
                    return int(digits), text[:at]
    raise TimeoutError(f"guest in {folder} did not finish {command!r} within {timeout:g} s")
