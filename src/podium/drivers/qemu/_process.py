"""QEMU processes seen from the host: spawn detached, find by PID + ``-uuid``, kill, probe KVM.

Every function here is synchronous and safe from any thread. A PID alone is never
trusted: :func:`is_running` and :func:`sigkill` also check that ``/proc/<pid>/cmdline``
carries ``-uuid <uuid>``, so a PID reused by another process is left alone.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from podium.drivers.qemu._errors import QemuError, QemuStartError

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
ACCEL_ENV = "PODIUM_QEMU_ACCEL"  # "kvm" or "tcg": skip the probe

# QEMU processes this process started, so they can be reaped (no zombies), whichever
# driver instance started them. Popen.poll is thread-safe.
_children: dict[int, tuple[subprocess.Popen[bytes], list[str]]] = {}
_children_lock = threading.Lock()


def spawn(argv: Sequence[str], *, cwd: Path, log: Path) -> int:
    """Start ``argv`` in a new session (it outlives this process, even ``kill -9``).

    stdout and stderr are appended to ``log``. Returns the PID. Raises
    :class:`QemuStartError` if the binary cannot be run.
    """
    _reap()
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as err:
        raise QemuStartError(
            f"cannot run {argv[0]}: {err.strerror}; apt-get install qemu-system-x86"
        ) from err
    with _children_lock:
        _children[proc.pid] = (proc, list(argv))
    return proc.pid


def reap() -> None:
    """Reap the QEMUs this process started that have exited: a zombie still holds its
    cgroup (recent kernels unlink a task from its cgroup only once it is reaped)."""
    _reap()


def _reap() -> None:
    with _children_lock:
        for pid, (proc, _) in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def _has_uuid(args: Sequence[str], uuid: str) -> bool:
    return any(a == "-uuid" and b == uuid for a, b in itertools.pairwise(args))


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None  # a zombie: exited, not yet reaped
    return raw.decode(errors="replace").split("\0")


def _exited(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def is_running(pid: int | None, uuid: str) -> bool:
    """Whether ``pid`` is alive and is the QEMU of guest ``uuid`` (not a reused PID)."""
    if not pid:
        return False
    with _children_lock:
        child = _children.get(pid)
    if child is not None:  # ours and not reaped: its PID cannot have been reused
        popen, argv = child
        # poll() also answers None while another thread holds the Popen's waitpid lock
        # (one blocked in wait()), so a dead child would pass for alive: ask the kernel.
        if popen.poll() is None and not _exited(pid):
            return _has_uuid(argv, uuid)
        _reap()
        return False
    args = _cmdline(pid)  # (empty for a moment after exec: children are checked above)
    return args is not None and _has_uuid(args, uuid)


def sigkill(pid: int | None, uuid: str) -> bool:
    """SIGKILL the QEMU of guest ``uuid`` if ``pid`` is it; return whether a signal was sent.

    Does not wait for the process to go (that takes a few milliseconds).
    """
    if not is_running(pid, uuid):
        return False
    assert pid is not None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def read_pidfile(path: Path) -> int | None:
    """The PID QEMU wrote with ``-pidfile``, or ``None`` (QEMU removes it on a clean exit)."""
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def create_volume(path: Path, size_gib: float, *, qemu_img: str = QEMU_IMG) -> bool:
    """Create a qcow2 volume unless one exists; return whether it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    size = f"{max(1, round(size_gib * 1024))}M"
    try:
        done = subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", str(partial), size],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError as err:
        raise QemuError(f"{qemu_img} is not installed: apt-get install qemu-utils") from err
    if done.returncode != 0:
        raise QemuError(f"qemu-img create {path} failed: {done.stderr.strip()}")
    partial.rename(path)
    return True


def restore_volume(path: Path, backup: Path, *, qemu_img: str = QEMU_IMG) -> bool:
    """Make volume ``path`` from ``backup`` (a qcow2, maybe backed by earlier backups: the
    chain is flattened) unless the volume exists; return whether it was made."""
    if path.exists():
        return False
    if not backup.is_file():
        raise QemuError(f"cannot restore {path.name}: backup {backup} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    argv = [qemu_img, "convert", "-q", "-O", "qcow2", str(backup), str(partial)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    except FileNotFoundError as err:
        raise QemuError(f"{qemu_img} is not installed: apt-get install qemu-utils") from err
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise QemuError(f"restoring {path.name} from {backup} failed: {done.stderr.strip()}")
    partial.rename(path)
    return True


# A boot sector that writes 1 to the isa-debug-exit port: QEMU exits with status 3
# once a vCPU really ran guest code (hangs are how broken KVM shows here).
_PROBE_SECTOR = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE]).ljust(510, b"\0") + b"\x55\xaa"


def kvm_works(qemu: str = QEMU, *, timeout: float = 3.0) -> bool:
    """Whether a guest really runs under ``-accel kvm`` (boots a 512-byte probe, bounded)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="podium-kvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_PROBE_SECTOR)
        argv = [
            qemu, "-accel", "kvm", "-nodefaults", "-display", "none", "-no-user-config",
            "-m", "16", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide,index=0", "-no-reboot",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 3


@functools.cache
def _probed_accel(qemu: str) -> str:
    return "kvm" if kvm_works(qemu) else "tcg"


def choose_accel(qemu: str = QEMU) -> str:
    """``$PODIUM_QEMU_ACCEL`` if set, else ``kvm`` when the probe proves it works, else
    ``tcg``. The probe runs once per process (up to 3 s where KVM hangs)."""
    forced = os.environ.get(ACCEL_ENV, "").strip()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise QemuError(f"{ACCEL_ENV}={forced!r}: expected kvm or tcg")
        return forced
    return _probed_accel(qemu)
