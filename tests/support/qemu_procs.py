"""Find a guest's QEMU processes by ``-uuid`` and sample them for double runs.

Invariant 1 (DESIGN.md): at no instant do two QEMU processes of one guest run outside a
live migration's ``-incoming`` state. The sampler asks every QEMU of the guest for its
run state through the observer monitor (``observe.sock`` in the QEMU's working folder),
independently of podium's agents and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from podium.drivers.qemu import observe_status


@dataclass(frozen=True, slots=True)
class QemuProc:
    pid: int
    argv: tuple[str, ...]
    cwd: Path

    @property
    def incoming(self) -> bool:
        return "-incoming" in self.argv

    def arg(self, flag: str) -> str | None:
        try:
            return self.argv[self.argv.index(flag) + 1]
        except (ValueError, IndexError):
            return None


def qemu_processes(uuid: str) -> list[QemuProc]:
    """Every live QEMU process on this machine whose ``-uuid`` is ``uuid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
            if not argv or "qemu-system" not in argv[0]:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue
            cwd = Path(os.readlink(f"/proc/{entry}/cwd"))
        except OSError:
            continue
        proc = QemuProc(int(entry), argv, cwd)
        if proc.arg("-uuid") == uuid:
            found.append(proc)
    return found


async def run_states(uuid: str) -> list[tuple[QemuProc, str]]:
    """Each QEMU of the guest with QEMU's own run state (``gone`` if it vanished)."""
    out = []
    for proc in qemu_processes(uuid):
        try:
            status = await observe_status(proc.cwd / "observe.sock")
        except Exception:  # exited between the scan and the query
            status = "gone" if not Path(f"/proc/{proc.pid}").exists() else "unreachable"
        out.append((proc, status))
    return out


@dataclass
class DoubleRunSampler:
    """Samples a guest's QEMUs in a thread until stopped; records any double run."""

    uuid: str
    interval: float = 0.05
    max_seconds: float = 300.0
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    timeline: list[tuple[float, tuple[tuple[int, str, bool], ...]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample_forever(self) -> None:
        async def loop() -> None:
            deadline = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                states = await run_states(self.uuid)
                self.samples += 1
                seen = tuple((p.pid, s, p.incoming) for p, s in states)
                if not self.timeline or self.timeline[-1][1] != seen:
                    self.timeline.append((time.time(), seen))
                running = [p.pid for p, s in states if s == "running"]
                outside_incoming = [p.pid for p, s in states if not p.incoming and s != "gone"]
                if len(running) > 1:
                    self.violations.append(f"{time.time():.3f}: two running QEMUs {running}")
                if len(outside_incoming) > 1:
                    self.violations.append(
                        f"{time.time():.3f}: two QEMUs outside -incoming {outside_incoming}"
                    )
                await asyncio.sleep(self.interval)

        asyncio.run(loop())

    def __enter__(self) -> DoubleRunSampler:
        self._thread = threading.Thread(target=self._sample_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=10)
