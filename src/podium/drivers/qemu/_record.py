"""A guest's state folder and the small JSON in it that outlives the agent.

::

    <state_dir>/<guest>/guest.json    config (name, uid, epoch, spec), uuid, pid, taps, volume,
                                      incoming URI / migration result
                        console.log   serial console of the current boot
                        qemu.log      QEMU's own stdout/stderr (appended)
                        qmp.sock      QMP monitor (QEMU listens; the driver connects)
                        observe.sock  second QMP monitor, for operators and checkers
                        qemu.pid      written by QEMU (-pidfile)

A new driver instance reads every ``guest.json`` and checks its PID (and ``-uuid``) to
re-adopt QEMUs that kept running while no agent watched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.drivers._protocol import GuestConfig, MigrationResult

RECORD = "guest.json"
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Record:
    """What the state folder says about one guest."""

    config: GuestConfig
    uuid: str
    volume: Path
    pid: int | None = None  # the QEMU of the last start (check it with is_running)
    started: bool = False  # started and not stopped since: a gone PID means it died
    taps: tuple[str, ...] = ()
    qmp: Path | None = None  # the monitor socket, for operators (the driver knows where)
    incoming: str | None = None  # a migration destination: the URI it listens on ("" until known)
    migrated: MigrationResult | None = None  # this QEMU's guest moved away (source side)
    outgoing: str | None = None  # the URI this QEMU was told to migrate to (source side)

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "config": {"name": c.name, "uid": c.uid, "epoch": c.epoch, "spec": dict(c.spec)},
            "uuid": self.uuid,
            "volume": str(self.volume),
            "pid": self.pid,
            "started": self.started,
            "taps": list(self.taps),
            "qmp": str(self.qmp) if self.qmp else None,
            "incoming": self.incoming,
            "migrated": _result_json(self.migrated),
            "outgoing": self.outgoing,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        c = data["config"]
        return cls(
            config=GuestConfig(str(c["name"]), str(c["uid"]), int(c["epoch"]), dict(c["spec"])),
            uuid=str(data["uuid"]),
            volume=Path(data["volume"]),
            pid=int(data["pid"]) if data.get("pid") else None,
            started=bool(data.get("started", False)),
            taps=tuple(str(t) for t in data.get("taps", [])),
            qmp=Path(data["qmp"]) if data.get("qmp") else None,
            incoming=str(data["incoming"]) if data.get("incoming") is not None else None,
            migrated=_result(data.get("migrated")),
            outgoing=str(data["outgoing"]) if data.get("outgoing") else None,
        )


def _result_json(result: MigrationResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "uri": result.uri,
        "total_ms": result.total_ms,
        "downtime_ms": result.downtime_ms,
        "transferred": result.transferred,
    }


def _result(data: Any) -> MigrationResult | None:
    if not isinstance(data, dict):
        return None
    return MigrationResult(
        str(data["uri"]),
        float(data["total_ms"]),
        float(data["downtime_ms"]),
        int(data["transferred"]),
    )


def save_record(folder: Path, record: Record) -> None:
    """Write ``guest.json`` atomically (a crash leaves the old or the new one, whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / RECORD)


def load_record(folder: Path) -> Record | None:
    """The record in ``folder``, or ``None`` if there is none or it cannot be read."""
    try:
        return Record.from_json(json.loads((folder / RECORD).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tail(path: Path, lines: int = 5, *, limit: int = 64 * 1024) -> str:
    """The last ``lines`` non-empty lines of a log, joined with `` / `` (for messages)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = _CONTROL.sub("", text.replace("\r", "\n"))
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(kept[-lines:])
