"""QemuDriver: one QEMU process per guest, driven over QMP. See the package docstring."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from podium.drivers._capacity import shortfall
from podium.drivers._protocol import (
    DriverError,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    InsufficientResources,
)
from podium.drivers.net import HostNetwork, NetworkError
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._argv import CONSOLE, QMP_SOCKET, layout
from podium.drivers.qemu._boot import QEMU_LOG, Killed, Launcher
from podium.drivers.qemu._errors import QemuError, QemuStartError, QmpError
from podium.drivers.qemu._guest import Guest, adopt
from podium.drivers.qemu._image import Image
from podium.drivers.qemu._qmp import Monitor, MonitorState
from podium.drivers.qemu._record import save_record, tail
from podium.model import Resources

log = logging.getLogger("podium.drivers.qemu")
S = DriverGuestState


class QemuDriver:
    """Real guests on this host. See :class:`podium.drivers.Driver` for the contract.

    ``state_dir`` holds one folder per guest (``_record``); ``volumes_dir`` the qcow2
    volumes (a shared directory standing for the SAN: they outlive ``destroy``).
    ``image`` is built (or found in ``image_cache``) at the first start when not given.
    ``network``: guest NICs become taps on its switch; without one guests get no NIC.
    ``accel``: ``kvm`` or ``tcg``; by default probed once (see ``_process.choose_accel``).
    Creating the driver re-adopts the QEMUs its state folders name; it stops nothing.
    Beyond the protocol: :meth:`pause`, :meth:`resume`, :meth:`qmp_status`,
    :meth:`console`, :meth:`close` (drop QMP connections, leave guests running).
    """

    kind = "qemu"

    def __init__(
        self,
        *,
        name: str = "qemu",
        capacity: Resources,
        state_dir: Path,
        volumes_dir: Path,
        image: Image | None = None,
        image_cache: Path | None = None,
        network: HostNetwork | None = None,
        accel: str | None = None,
        boot_timeout: float = 120.0,
        qmp_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        qemu: str = proc.QEMU,
        qemu_img: str = proc.QEMU_IMG,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.state_dir = state_dir
        self.volumes_dir = volumes_dir
        self.network = network
        self._launcher = Launcher(
            image=image,
            image_cache=image_cache,
            network=network,
            accel=accel,
            qemu=qemu,
            qemu_img=qemu_img,
            boot_timeout=boot_timeout,
            qmp_timeout=qmp_timeout,
        )
        self._clock = clock
        self._lock = threading.Lock()  # guards _guests and the guests' state fields
        state_dir.mkdir(parents=True, exist_ok=True)
        self._guests: dict[str, Guest] = adopt(state_dir, clock)

    # -- helpers -------------------------------------------------------------------------

    def _set(self, g: Guest, state: DriverGuestState, message: str = "") -> None:
        g.set(state, message, self._clock())

    def _get(self, name: str) -> Guest:
        g = self._guests.get(name)
        if g is None:
            raise GuestNotFound(f"guest {name!r} is not defined on {self.name}")
        return g

    def _folder(self, name: str) -> Path:
        return self.state_dir / name

    def _save(self, g: Guest) -> None:
        save_record(self._folder(g.name), g.record(self._folder(g.name)))

    def _volume_for(self, config: GuestConfig) -> Path:
        return self.volumes_dir / f"{config.name}-{config.uid}.qcow2"

    # -- Driver protocol -----------------------------------------------------------------

    async def create(self, config: GuestConfig) -> GuestInfo:
        guest = layout(config, with_network=self.network is not None)  # validates the spec
        with self._lock:
            g = self._guests.get(config.name)
            if g is not None and g.config == config:
                return g.info()
            if g is not None and g.state.active:
                raise GuestBusy(
                    f"guest {config.name!r} runs at epoch {g.config.epoch}; stop it before "
                    f"defining epoch {config.epoch}"
                )
            if g is None:
                g = Guest(config, guest.uuid, self._volume_for(config), S.DEFINED, "", 0.0)
                self._set(g, S.DEFINED)
                self._guests[config.name] = g
            g.config, g.uuid, g.volume = config, guest.uuid, self._volume_for(config)
            self._save(g)
            return g.info()

    async def start(self, name: str) -> GuestInfo:
        with self._lock:
            g = self._get(name)
            if g.state is S.RUNNING:
                return g.info()
            if g.state in (S.STARTING, S.STOPPING):
                raise GuestBusy(f"guest {name!r} is {g.state.value}; try again once it settles")
            used = (o.config.request for o in self._guests.values() if o.state.active)
            short = shortfall(self.name, self.capacity, used, g.config.request)
            if short:
                self._set(g, S.FAILED, short)
                raise InsufficientResources(f"cannot start {name}: {short}")
            g.generation += 1
            generation = g.generation
            self._set(g, S.STARTING, "starting")
        try:
            await g.reap_previous()
            folder = self._folder(name)
            argv, taps = await self._launcher.prepare(g, folder)
            self._spawn(g, generation, argv, taps)
            await self._launcher.wait_ready(g, folder, generation)
        except asyncio.CancelledError:
            await self._abandon(g, generation, S.STOPPED, "start cancelled")
            raise
        except Exception as err:
            if g.generation != generation:  # killed (or stopped) while starting
                await g.close_monitor()
                why = f"guest {name!r} was stopped while starting ({g.message})"
                raise GuestKilled(why) from err
            message = str(err) if isinstance(err, DriverError) else f"start failed: {err!r}"
            await self._abandon(g, generation, S.FAILED, message)
            if isinstance(err, DriverError):
                raise
            raise QemuStartError(message) from err
        with self._lock:
            if not g.owned_by(generation):
                raise GuestKilled(f"guest {name!r} was stopped while starting ({g.message})")
            self._set(g, S.RUNNING)
            return g.info()

    def _spawn(self, g: Guest, generation: int, argv: list[str], taps: tuple[str, ...]) -> None:
        """Start QEMU under the lock: a kill either sees its PID or makes us give up."""
        folder = self._folder(g.name)
        with self._lock:
            if g.generation != generation:
                raise Killed
            g.pid = proc.spawn(argv, cwd=folder, log=folder / QEMU_LOG)
            g.started, g.taps, g.ready = True, taps, ""
            g.paused = g.guest_shutdown = False
            self._save(g)
        log.info("%s: started QEMU for %s (pid %d)", self.name, g.name, g.pid)

    async def _abandon(self, g: Guest, generation: int, state: S, message: str) -> None:
        """A start that will not finish: kill what it spawned and leave ``state``."""
        with self._lock:
            if g.generation == generation:
                g.generation += 1
                self._set(g, state, message)
                proc.sigkill(g.pid, g.uuid)
                g.started = False
                self._save(g)
        await g.close_monitor()

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        with self._lock:
            g = self._guests.get(name)
            if g is None:
                return None
            if not g.state.active:
                return g.info()
            g.generation += 1
            generation = g.generation
            self._set(g, S.STOPPING, "stopping")
        how = "stopped"
        try:
            if g.monitor is None and not g.connecting:  # adopted, not connected yet
                await self._reconnect(g, force=True)
            if not await g.power_off(timeout):
                how = f"stopped (no power-off within {timeout:g} s: quit)"
                monitor = g.monitor
                if monitor is not None and monitor.state is MonitorState.CONNECTED:
                    with contextlib.suppress(QmpError):
                        await monitor.execute("quit", timeout=2.0)
                if not await g.wait_gone(2.0):
                    how = f"stopped (no power-off within {timeout:g} s: killed)"
                    proc.sigkill(g.pid, g.uuid)
                    await g.wait_gone(5.0)
        except BaseException:
            proc.sigkill(g.pid, g.uuid)
            raise
        finally:
            await g.close_monitor()
            with self._lock:
                if g.generation == generation and g.state is S.STOPPING:
                    self._set(g, S.STOPPED, how)
                g.started = False
                self._save(g)
        return g.info()

    def kill(self, name: str) -> None:
        with self._lock:
            g = self._guests.get(name)
            if g is not None and g.state.active:
                g.generation += 1
                self._set(g, S.STOPPED, "killed")
                proc.sigkill(g.pid, g.uuid)

    def kill_all(self) -> builtins.list[str]:
        with self._lock:
            killed = []
            for g in self._guests.values():
                if g.state.active:
                    g.generation += 1
                    self._set(g, S.STOPPED, "killed (host fenced)")
                    proc.sigkill(g.pid, g.uuid)
                    killed.append(g.name)
            return killed

    async def destroy(self, name: str, *, volumes: bool = False) -> None:
        """See the protocol; ``volumes=True`` also deletes the guest's qcow2 volume."""
        with self._lock:
            g = self._guests.get(name)
            if g is None:
                return
            if g.state.active:
                raise GuestBusy(f"guest {name!r} is {g.state.value}; stop it before destroying it")
            del self._guests[name]
        await g.close_monitor()
        if self.network is not None:
            for tap in g.taps:
                try:
                    await asyncio.to_thread(self.network.detach, tap)
                except NetworkError as err:  # a tap left behind is not worth a stuck guest
                    log.warning("%s: destroying %s: %s", self.name, name, err)
        await asyncio.to_thread(shutil.rmtree, self._folder(name), True)
        if volumes:
            g.volume.unlink(missing_ok=True)

    async def list(self) -> builtins.list[GuestInfo]:
        await self._refresh()
        with self._lock:
            return [self._guests[n].info() for n in sorted(self._guests)]

    async def status(self, name: str) -> GuestInfo | None:
        await self._refresh()
        with self._lock:
            g = self._guests.get(name)
            return g.info() if g else None

    # -- observation ---------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Fold in QMP events and process exits; (re)connect monitors of running guests."""
        with self._lock:
            guests = builtins.list(self._guests.values())
        for g in guests:
            monitor = g.monitor
            if monitor is not None:
                for event in monitor.drain_events():
                    if event.name in ("STOP", "RESUME"):
                        g.paused = event.name == "STOP"
                        if g.state is S.RUNNING:
                            self._set(g, S.RUNNING, "paused" if g.paused else "")
                    elif event.name == "SHUTDOWN" and event.data.get("guest"):
                        g.guest_shutdown = True
                lost = monitor.state is not MonitorState.CONNECTED
                if (not g.state.active or lost) and g.state is not S.STARTING:
                    await g.close_monitor()
            if g.state is S.RUNNING and not proc.is_running(g.pid, g.uuid):
                self._exited(g)
            elif g.state is S.RUNNING and g.monitor is None and not g.connecting:
                await self._reconnect(g)

    def _exited(self, g: Guest) -> None:
        with self._lock:
            if g.state is not S.RUNNING or proc.is_running(g.pid, g.uuid):
                return
            g.generation += 1
            if g.guest_shutdown:
                self._set(g, S.STOPPED, "the guest powered itself off")
            else:
                why = tail(self._folder(g.name) / QEMU_LOG, 2) or "no message"
                self._set(g, S.FAILED, f"QEMU exited unexpectedly: {why}")
            g.started = False
            self._save(g)
        log.warning("%s: guest %s: %s", self.name, g.name, g.message)

    async def _reconnect(self, g: Guest, *, force: bool = False) -> None:
        """Connect the monitor of a running guest (adopted, or its socket dropped).

        Bounded by a second (``list`` waits for it); retried every 5 s unless ``force``.
        """
        now = self._clock()
        if now < g.qmp_retry_at and not force:
            return
        g.connecting = True
        monitor = Monitor(self._folder(g.name) / QMP_SOCKET, name=g.name)
        try:
            await monitor.connect(timeout=min(1.0, self._launcher.qmp_timeout))
            status = await monitor.query_status()
        except QmpError as err:
            await monitor.close()
            g.qmp_retry_at = now + 5.0
            log.warning("%s: %s", self.name, err)
            return
        finally:
            g.connecting = False
        g.monitor, g.paused = monitor, status == "paused"
        if g.state is S.RUNNING:
            self._set(g, S.RUNNING, "paused" if g.paused else "")

    # -- beyond the protocol: pause, resume, QMP, console --------------------------------

    async def _running_monitor(self, name: str) -> tuple[Guest, Monitor]:
        await self._refresh()
        with self._lock:
            g = self._get(name)
            if g.state is not S.RUNNING:
                raise QemuError(f"guest {name!r} is {g.state.value}, not running")
        if g.monitor is None:
            raise QmpError(f"guest {name!r}: its QMP monitor is not connected (retrying)")
        return g, g.monitor

    async def pause(self, name: str) -> GuestInfo:
        """Freeze a running guest's vCPUs (QMP ``stop``); it keeps its resources."""
        return await self._run_state(name, "stop")

    async def resume(self, name: str) -> GuestInfo:
        """Let a paused guest run again (QMP ``cont``)."""
        return await self._run_state(name, "cont")

    async def _run_state(self, name: str, command: str) -> GuestInfo:
        g, monitor = await self._running_monitor(name)
        await monitor.execute(command)
        g.paused = await monitor.query_status() == "paused"
        with self._lock:
            if g.state is S.RUNNING:
                self._set(g, S.RUNNING, "paused" if g.paused else "")
            return g.info()

    async def qmp_status(self, name: str) -> str:
        """QEMU's own run state of a running guest (``running``, ``paused``...)."""
        _, monitor = await self._running_monitor(name)
        return await monitor.query_status()

    def pid(self, name: str) -> int | None:
        """The QEMU PID of an active guest, else ``None``."""
        with self._lock:
            g = self._guests.get(name)
            return g.pid if g is not None and g.state.active else None

    def ready_line(self, name: str) -> str:
        """The ``PODIUM-READY`` line of the guest's current boot (empty if none yet)."""
        with self._lock:
            g = self._guests.get(name)
            return g.ready if g is not None else ""

    def console(self, name: str) -> str:
        """The serial console of the guest's last boot."""
        try:
            return (self._folder(name) / CONSOLE).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def close(self) -> None:
        """Disconnect every QMP monitor; the QEMUs keep running (a new driver adopts them)."""
        with self._lock:
            guests = builtins.list(self._guests.values())
        for g in guests:
            await g.close_monitor()
