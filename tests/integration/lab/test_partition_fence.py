"""A partitioned host's guests die by its own hand before they start elsewhere: by the clock.

HA acceptance, on a 2-host qemu lab (host TTL 6 s) with one guest on host A:

1. A is cut off the fabric (``ip link set up0 down`` in its namespace) until the guest
   runs on B and at least 2 x TTL + 3 s have passed; then healed.
2. A thread samples the guest's QEMUs (by ``-uuid``) every 50 ms: each PID, its host
   (by network namespace), when it was last seen alive and first seen gone. A QEMU's
   start comes from ``/proc/PID/stat`` (exact to a clock tick, never later than the
   truth). A's fence is read from A's own logs (the agent's watchdog, the fence
   keeper), the server's view from ``podium events``.
3. One timeline of all of it, in UTC with ms and as offsets from the cut, goes to the
   test log and into every assertion message.

Asserted: A's QEMU was gone before B's QEMU started (the sampled upper bound of its
death against B's exact start); it vanished while A was still cut, when A's own
fence fired, and before the server declared A lost; never two QEMUs of the guest at
once; after healing A rejoins, reports its fence (``HostFenced``) and starts nothing:
the guest stays on B at the new epoch, in the same QEMU.

``HostFenced`` sits at the time of the fence: the server places it at "now minus the
seconds ago A reported", and A measures that age only once a server answers it (a
registration sent while cut used to land it late by its time in flight, 1.7 s seen:
after ``HostLost``). Checked to within a second of A's own fence log line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lab.conftest import CliLab, new_guard, require_netns
from tests.support.components import missing_component
from tests.support.qemu_procs import qemu_processes

pytestmark = pytest.mark.slow

TTL = 6  # host lease TTL, s: A fences itself max(0.5, TTL/5) = 1.2 s before it can expire
GUEST = "kind: Guest\nname: fenced\nspec: {request: {cpu: 1, memory_mib: 128}}\n"
SAMPLE_EVERY = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")
AGENT_FENCE = re.compile(r"(\S+) fenced itself \((.*)\): killed (\d+) guest\(s\)")
KEEPER_FENCE = re.compile(r"fence-keeper: fence: deadline passed; killed QEMU\(s\) \[([\d, ]*)\]")


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Timeline:
    """Moments from every source, shown sorted, as UTC and as offsets from the cut."""

    cut: float = 0.0
    entries: list[tuple[float, str]] = field(default_factory=list)

    def add(self, t: float, what: str) -> None:
        self.entries.append((t, what))

    def text(self) -> str:
        zero = self.cut or (min(t for t, _ in self.entries) if self.entries else 0.0)
        lines = [f"timeline (offsets from the cut at {_utc(zero)}):"]
        lines += [f"  {_utc(t)}  {t - zero:+8.3f} s  {w}" for t, w in sorted(self.entries)]
        return "\n".join(lines)


def _boot_epoch() -> float:
    """The wall-clock time at which CLOCK_BOOTTIME read zero (the tightest of a few reads)."""
    best = (float("inf"), 0.0)
    for _ in range(20):
        before = time.time()
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        after = time.time()
        best = min(best, (after - before, (before + after) / 2 - boot))
    return best[1]


def _started(pid: int, boot_epoch: float) -> float | None:
    """Wall-clock start of ``pid`` from /proc/PID/stat field 22 (clock ticks since boot).

    The kernel truncates to a tick, so the process started no earlier than this.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # fields after the name start at 3
    return boot_epoch + ticks / CLK_TCK


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclass
class Qemu:
    """One QEMU of the guest as the sampler saw it (wall-clock times)."""

    pid: int
    host: str
    incoming: bool
    started: float  # exact to a tick, from /proc: never later than the real start
    first_seen: float  # end of the first scan that saw it
    last_seen: float  # start of the last scan that saw it: alive at least until then
    gone: float | None = None  # end of the first scan without it: dead by then


@dataclass
class QemuWatch:
    """Samples the guest's QEMU processes in a thread until stopped."""

    uuid: str
    hosts: dict[int, str]  # network namespace inode -> host name
    boot_epoch: float = field(default_factory=_boot_epoch)
    samples: int = 0
    procs: dict[int, Qemu] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _host(self, pid: int) -> str:
        inode = _netns_inode(f"/proc/{pid}/ns/net")
        return self.hosts.get(inode, f"netns {inode}") if inode else "?"

    def scan(self) -> None:
        t0 = time.time()
        found = qemu_processes(self.uuid)
        t1 = time.time()
        self.samples += 1
        for p in found:
            seen = self.procs.get(p.pid)
            if seen is None:
                started = _started(p.pid, self.boot_epoch)
                if started is None:
                    continue  # exited between the scan and now
                seen = Qemu(p.pid, self._host(p.pid), p.incoming, started, t1, t0)
                self.procs[p.pid] = seen
            seen.last_seen = t0
        pids = {p.pid for p in found}
        for seen in self.procs.values():
            if seen.gone is None and seen.pid not in pids:
                seen.gone = t1
        running = [f"{p.pid} on {self.procs[p.pid].host}" for p in found if not p.incoming]
        if len(running) > 1:
            self.overlaps.append(f"{_utc(t0)}: two QEMUs outside -incoming: {running}")

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.scan()
            except Exception as err:  # a failed scan must show, not end the sampling
                self.errors.append(f"{_utc(time.time())}: {err!r}")

    def __enter__(self) -> QemuWatch:
        self.scan()
        self._thread = threading.Thread(target=self._run, name="qemu-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _ok(lab: CliLab, *args: str, stdin: str | None = None) -> str:
    done = lab.podium(*args, stdin=stdin)
    assert done.returncode == 0, f"podium {' '.join(args)}: {done.stderr}"
    return done.stdout


def _guest(lab: CliLab) -> dict[str, Any]:
    items = json.loads(_ok(lab, "get", "guests", "-o", "json"))["items"]
    found = [g for g in items if g["name"] == "fenced"]
    assert len(found) == 1, items
    return found[0]  # type: ignore[no-any-return]


def _events(lab: CliLab) -> list[dict[str, Any]]:
    out = _ok(lab, "events", "-o", "json", "--limit", "0")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _wait(what: str, probe: Callable[[], Any], timeout: float, why: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{why()}")
        time.sleep(0.3)


def _uplink(netns: str, state: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "ip", "link", "set", "up0", state],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"up0 {state} in {netns}: {done.stderr}"


def _log_lines(path: Path, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
    """``(time, match)`` for each line of a daemon log (``%(asctime)s``, local time)."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            stamped = LOG_LINE.match(line)
            found = pattern.search(line) if stamped else None
            if stamped and found:
                at = datetime.strptime(stamped.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append((at, found))
    return out


@pytest.mark.timeout(240)
def test_a_partitioned_hosts_guest_is_killed_by_its_own_host_before_it_starts_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_netns()
    if shutil.which("qemu-system-x86_64") is None:
        missing_component("qemu-system-x86_64 is not installed (scripts/setup installs it)")
    monkeypatch.setenv("PODIUM_QEMU_ACCEL", "tcg")  # as every lab test: no KVM needed
    guard = new_guard(tmp_path)
    lab = CliLab(guard, tmp_path, subprocess.CompletedProcess([], 1, "", ""))
    try:
        lab.up = lab.podium(
            "lab", "up", "--hosts", "2", "--driver", "qemu", "--host-ttl", str(TTL), "--json",
            "--name", guard.name, timeout=300,
        )  # fmt: skip
        assert lab.up.returncode == 0, lab.up.stderr
        _partition_and_check(lab)
    finally:
        down = lab.podium("lab", "down", "--name", guard.name)
        leaks = guard.check()
    assert down.returncode == 0, down.stderr
    assert leaks == [], leaks


@dataclass
class Evidence:
    """Everything gathered about one partition, and the timeline it makes."""

    timeline: Timeline
    events: list[dict[str, Any]]  # the server's, from 2 s before the cut, of A, B, the guest
    fences: list[float]  # when A's own agent or fence keeper logged killing the guest
    by_keeper: bool  # the fence keeper's log names the old QEMU's PID

    def first(self, reason: str, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["reason"] == reason and e["name"] == name]
        assert found, f"no {reason} event for {name} after the cut\n{self.timeline.text()}"
        return found[0]


def _gather(lab: CliLab, base: Timeline, watch: QemuWatch, old: Qemu, a: str, b: str) -> Evidence:
    """The moments so far from every source: the sampler, A's logs, the server's events."""
    timeline = Timeline(base.cut, list(base.entries))
    timeline.add(old.last_seen, f"{a}'s QEMU (PID {old.pid}) last seen alive")
    if old.gone is not None:
        timeline.add(old.gone, f"{a}'s QEMU (PID {old.pid}) gone (sampled)")
    for q in list(watch.procs.values()):
        if q.pid != old.pid:
            timeline.add(q.started, f"QEMU PID {q.pid} started on {q.host} (/proc start time)")
            timeline.add(q.first_seen, f"QEMU PID {q.pid} on {q.host} first seen (sampled)")
            if q.gone is not None:
                timeline.add(q.gone, f"QEMU PID {q.pid} on {q.host} gone (sampled)")
    agent_fences = _log_lines(lab.dir / "hosts" / a / "agent.log", AGENT_FENCE)
    keeper_fences = [
        (t, m)
        for path in sorted(lab.dir.rglob("fence.json.log"))
        if path.parent.name == a
        for t, m in _log_lines(path, KEEPER_FENCE)
    ]
    for t, m in agent_fences:
        timeline.add(t, f"{a}'s agent (watchdog): fenced itself, killed {m.group(3)} guest(s)")
    for t, m in keeper_fences:
        timeline.add(t, f"{a}'s fence keeper: killed QEMU(s) [{m.group(1)}]")
    by_agent = [t for t, m in agent_fences if int(m.group(3)) >= 1]
    by_keeper = [t for t, m in keeper_fences if str(old.pid) in m.group(1).split(", ")]
    fences = sorted(t for t in by_agent + by_keeper if t > timeline.cut)
    events = [
        e for e in _events(lab) if e["time"] >= timeline.cut - 2 and e["name"] in (a, b, "fenced")
    ]
    for e in events:
        timeline.add(e["time"], f"server: {e['reason']} {e['name']}: {e['message']}")
    fenced = [e for e in events if e["reason"] == "HostFenced" and e["name"] == a]
    if fences and fenced:  # the server places it from A's "seconds ago": how well?
        lag = fenced[0]["time"] - fences[0]
        timeline.add(fenced[0]["time"], f"(HostFenced placed {lag:+.3f} s from {a}'s fence)")
    return Evidence(timeline, events, fences, bool(by_keeper))


def _partition_and_check(lab: CliLab) -> None:
    base = Timeline()
    _ok(lab, "apply", "-f", "-", stdin=GUEST)

    def running() -> dict[str, Any] | None:
        g = _guest(lab)
        assert g["status"]["state"] != "failed", g["status"]
        return g if g["status"]["state"] == "running" else None

    guest = _wait("the guest running", running, 120, lambda: json.dumps(_guest(lab)["status"]))
    a, uuid, epoch = guest["status"]["host"], guest["status"]["uuid"], guest["status"]["epoch"]
    b = next(h for h in json.loads(lab.up.stdout)["hosts"] if h != a)
    netns = {h: f"{lab.guard.prefix}{h}" for h in (a, b)}
    inodes = {_netns_inode(f"/run/netns/{ns}"): h for h, ns in netns.items()}
    hosts = {inode: h for inode, h in inodes.items() if inode is not None}
    assert len(hosts) == 2, netns

    with QemuWatch(uuid, hosts) as watch:
        olds = list(watch.procs.values())
        assert len(olds) == 1 and olds[0].host == a, (a, olds)
        old = olds[0]

        def so_far() -> str:
            return _gather(lab, base, watch, old, a, b).timeline.text()

        time.sleep(1.0)  # samples before the cut
        base.cut = time.time()
        _uplink(netns[a], "down")
        base.add(base.cut, f"cut {a} off the fabric (up0 down in {netns[a]})")
        try:

            def moved() -> dict[str, Any] | None:
                g = _guest(lab)
                s = g["status"]
                on_b = s["host"] == b and s["state"] == "running" and s["epoch"] > epoch
                long_enough = time.time() - base.cut >= 2 * TTL + 3
                return g if on_b and long_enough else None

            after = _wait("the guest running on B", moved, 120, so_far)
        finally:
            _uplink(netns[a], "up")
            healed = time.time()
            base.add(healed, f"healed {a} (up0 up)")

        def rejoined() -> list[dict[str, Any]]:
            return [
                e
                for e in _events(lab)
                if e["reason"] == "HostReregistered" and e["name"] == a and e["time"] > healed
            ]

        back = _wait(f"{a} registered again", rejoined, 60, so_far)[0]
        time.sleep(4.0)  # A lists its assignments and tidies up: nothing may start there
        final = _guest(lab)
    final_procs = [p.pid for p in qemu_processes(uuid)]
    base.add(time.time(), f"end: guest {final['status']}; QEMUs of the guest {final_procs}")
    got = _gather(lab, base, watch, old, a, b)
    text = got.timeline.text()
    print(f"\n{text}\n({watch.samples} samples, every {SAMPLE_EVERY * 1000:.0f} ms)", flush=True)

    assert watch.errors == [], f"sampler errors {watch.errors}\n{text}"
    assert watch.samples > 100, f"too few samples ({watch.samples})\n{text}"
    assert watch.overlaps == [], f"two QEMUs of the guest at once: {watch.overlaps}\n{text}"
    lost = got.first("HostLost", a)
    rebound = got.first("GuestRebound", "fenced")
    fenced = got.first("HostFenced", a)
    news = [q for q in watch.procs.values() if q.pid != old.pid]
    on_b = [q for q in news if q.host == b]
    assert len(on_b) == 1, f"expected one QEMU on {b}, saw {news}\n{text}"
    new = on_b[0]
    assert old.gone is not None, f"{a}'s QEMU never went away\n{text}"
    # A's QEMU was dead (by old.gone at the latest) before B's started (new.started at the
    # earliest): the strict order the acceptance asks for.
    assert old.gone < new.started, f"{a}'s QEMU outlived the start of {b}'s\n{text}"
    # Killed from A's side: while A was cut off, before the server declared it lost, when
    # A's own fence (agent watchdog or fence keeper) fired.
    assert old.gone < healed, f"{a}'s QEMU died only after healing\n{text}"
    assert old.gone < lost["time"], f"{a}'s QEMU outlived the server's HostLost\n{text}"
    assert old.gone < rebound["time"], f"{a}'s QEMU outlived the rebind\n{text}"
    assert got.fences, f"no fence of {a}'s own in its logs\n{text}"
    fence = got.fences[0]
    assert base.cut < fence < lost["time"], f"{a}'s fence not before HostLost\n{text}"
    assert abs(fence - old.gone) < 1.0, f"{a}'s QEMU did not die with its fence\n{text}"
    # The server's view: lost, then rebound to B at the next epoch, then B's QEMU starts.
    assert base.cut < lost["time"] <= rebound["time"], text
    assert f"to {b} (epoch {epoch + 1})" in rebound["message"], f"{rebound}\n{text}"
    assert rebound["time"] < new.started + 0.5, f"{b} started before the rebind\n{text}"
    up_on_b = [
        e for e in got.events if e["reason"] == "GuestRunning" and f" on {b} " in e["message"]
    ]
    assert up_on_b and up_on_b[0]["time"] > new.started, f"no GuestRunning on {b}\n{text}"
    # HostFenced: A told the server on rejoining, with the fence's age measured over a
    # link that answers; the server places it at "now - age" (one machine, one clock).
    # The agent counts the guests its driver still held running: 0 if it noticed the
    # keeper's kill first.
    counted = "killing 1 guest(s)" in fenced["message"]
    assert counted or got.by_keeper, f"{fenced}\n{text}"
    assert fence - 0.5 < fenced["time"] < fence + 1.0, f"HostFenced misplaced\n{text}"
    assert fenced["time"] <= back["time"], f"HostFenced after the return\n{text}"
    # Healed: A rejoined and started nothing; the guest stays on B, at the new epoch, in
    # the same QEMU.
    assert back["time"] > healed, text
    assert not [q for q in news if q.host != b], f"a QEMU on {a} after the fence\n{text}"
    status = final["status"]
    assert (status["host"], status["epoch"], status["state"]) == (b, epoch + 1, "running"), (
        f"{status}\n{text}"
    )
    assert after["status"]["epoch"] == epoch + 1, f"{after['status']}\n{text}"
    assert final_procs == [new.pid] and new.gone is None, f"{b}'s QEMU restarted\n{text}"
