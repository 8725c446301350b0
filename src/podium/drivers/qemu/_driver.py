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
from typing import NoReturn

from podium.drivers._capacity import shortfall
from podium.drivers._protocol import (
    BackupError,
    BackupRequest,
    BackupResult,
    DriverError,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    InsufficientResources,
    MigrationError,
    MigrationProgress,
    MigrationResult,
)
from podium.drivers._qos import GuestQos
from podium.drivers.net import BridgeFlows, HostNetwork, NetworkError
from podium.drivers.qemu import _migration
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._argv import CONSOLE, QMP_SOCKET, ROOT_NODE, layout, ready_line
from podium.drivers.qemu._backup import Backup, backup_volumes, existing, target_dir
from podium.drivers.qemu._boot import QEMU_LOG, Killed, Launcher
from podium.drivers.qemu._cgroup import CpuControl
from podium.drivers.qemu._errors import QemuError, QemuStartError, QmpError
from podium.drivers.qemu._flows import measure as measure_flows
from podium.drivers.qemu._guest import Guest, adopt
from podium.drivers.qemu._hba import lun_nodes, prepare_volumes
from podium.drivers.qemu._image import Image
from podium.drivers.qemu._qmp import Monitor, MonitorState
from podium.drivers.qemu._qos import Enforcer
from podium.drivers.qemu._record import save_record, tail
from podium.drivers.qemu._usage import Probe, UsageProbe, memory_of
from podium.model import Resources

log = logging.getLogger("podium.drivers.qemu")
S = DriverGuestState


class QemuDriver:
    """Real guests on this host. See :class:`podium.drivers.Driver` for the contract.

    ``state_dir`` holds one folder per guest (``_record``); ``volumes_dir`` the qcow2
    volumes (a shared directory standing for the SAN: they outlive ``destroy``), a
    profile's LUN volumes in ``<profile>/`` there (``_hba``: made at the first start,
    never deleted here);
    ``backups_dir`` the backups (default: ``backups`` beside ``volumes_dir``);
    ``replica_dir`` the other site's storage mounted here, for backups with target
    ``replica`` (``None``: this host refuses them).
    ``image`` is built (or found in ``image_cache``) at the first start when not given.
    ``network``: guest NICs become taps on its switch; without one guests get no NIC.
    ``accel``: ``kvm`` or ``tcg``; by default probed once (see ``_process.choose_accel``).
    Creating the driver re-adopts the QEMUs its state folders name; it stops nothing.
    Implements :class:`~podium.drivers.LiveMigration`, :class:`~podium.drivers.BlockBackup`
    and :class:`~podium.drivers.ConsoleSource`. Beyond the protocols: :meth:`pause`,
    :meth:`resume`, :meth:`qmp_status`, :meth:`ready_line`, :meth:`close` (drop QMP
    connections, leave guests running).
    """

    kind = "qemu"

    def __init__(
        self,
        *,
        name: str = "qemu",
        capacity: Resources,
        state_dir: Path,
        volumes_dir: Path,
        backups_dir: Path | None = None,
        replica_dir: Path | None = None,
        image: Image | None = None,
        image_cache: Path | None = None,
        network: HostNetwork | None = None,
        accel: str | None = None,
        boot_timeout: float = 120.0,
        qmp_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        qemu: str = proc.QEMU,
        qemu_img: str = proc.QEMU_IMG,
        cpu_control: CpuControl | str | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.state_dir = state_dir
        self.volumes_dir = volumes_dir
        self.backups_dir = backups_dir or volumes_dir.parent / "backups"
        self.replica_dir = replica_dir
        self.network = network
        self._qemu_img = qemu_img
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
        self._qos = Enforcer(name, network, cpu=cpu_control)  # tc and cgroups (_qos)
        self._lock = threading.Lock()  # guards _guests and the guests' state fields
        state_dir.mkdir(parents=True, exist_ok=True)
        self._guests: dict[str, Guest] = adopt(state_dir, clock)
        for g in self._guests.values():  # its limits outlive the agent (argv, tc, cgroup)
            g.qos = self._qos.adopted(g.config) if g.state.active else None
        netns = getattr(network, "netns", None)  # LinuxBridgeNetwork may live elsewhere
        self._flows = None if network is None else BridgeFlows(netns=netns)  # FlowSource
        self._usage = UsageProbe(netns, network=network is not None)  # UsageSource

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

    async def _lun_volumes(self, g: Guest, *, incoming: bool) -> None:
        guest = layout(g.config, with_network=self.network is not None)
        await asyncio.to_thread(
            prepare_volumes,
            g.name,
            guest.hbas,
            self.volumes_dir,
            incoming=incoming,
            qemu_img=self._qemu_img,
            restore=dict(guest.restore_volumes),  # a restored guest's LUNs, from its backup
        )

    # -- Driver protocol -----------------------------------------------------------------

    async def create(self, config: GuestConfig) -> GuestInfo:
        guest = layout(config, with_network=self.network is not None)  # validates the spec
        if guest.restore_from is not None:  # a restored guest's volume is made here, once
            volume = self._volume_for(config)
            await asyncio.to_thread(
                proc.restore_volume, volume, guest.restore_from, qemu_img=self._qemu_img
            )
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
            if g.state in (S.STARTING, S.STOPPING, S.INCOMING):
                raise GuestBusy(f"guest {name!r} is {g.state.value}; try again once it settles")
            generation = self._claim(g, S.STARTING, "starting")
        try:
            await g.reap_previous()
            folder = self._folder(name)
            await self._lun_volumes(g, incoming=False)
            argv, taps = await self._launcher.prepare(g, folder)
            self._spawn(g, generation, argv, taps)
            await self._enforce(g, taps)
            await self._launcher.wait_ready(g, folder, generation)
        except BaseException as err:
            await self._start_failed(g, generation, err, QemuStartError)
        with self._lock:
            if not g.owned_by(generation):
                raise GuestKilled(f"guest {name!r} was stopped while starting ({g.message})")
            self._set(g, S.RUNNING, g.running_message())
            return g.info()

    def _claim(self, g: Guest, state: S, message: str) -> int:
        """Under the lock: check capacity and move ``g`` to an active ``state``; the
        generation the operation owns. Raises :class:`InsufficientResources`."""
        used = (o.config.request for o in self._guests.values() if o.state.active)
        short = shortfall(self.name, self.capacity, used, g.config.request)
        if short:
            self._set(g, S.FAILED, short)
            raise InsufficientResources(f"cannot start {g.name}: {short}")
        g.generation += 1
        self._set(g, state, message)
        return g.generation

    async def _start_failed(
        self, g: Guest, generation: int, err: BaseException, wrap: type[DriverError]
    ) -> NoReturn:
        """A start (or incoming start) that will not finish: kill what it spawned, leave
        the guest stopped (cancelled, killed) or failed, and raise what to report."""
        if not isinstance(err, Exception):  # cancelled (or the process is exiting)
            await self._abandon(g, generation, S.STOPPED, "start cancelled")
            raise err
        if g.generation != generation:  # killed (or stopped) while starting
            await g.close_monitor()
            why = f"guest {g.name!r} was stopped while starting ({g.message})"
            raise GuestKilled(why) from err
        message = str(err) if isinstance(err, DriverError) else f"start failed: {err!r}"
        await self._abandon(g, generation, S.FAILED, message)
        if isinstance(err, DriverError):
            raise err
        raise wrap(message) from err

    def _spawn(
        self,
        g: Guest,
        generation: int,
        argv: list[str],
        taps: tuple[str, ...],
        *,
        incoming: bool = False,
    ) -> None:
        """Start QEMU under the lock: a kill either sees its PID or makes us give up."""
        folder = self._folder(g.name)
        with self._lock:
            if g.generation != generation:
                raise Killed
            # Saved before QEMU exists: an agent that dies in between must not adopt a
            # migration destination (found by its pidfile) as a running guest.
            g.incoming, g.migrated = ("" if incoming else None), None
            self._save(g)
            g.pid = proc.spawn(argv, cwd=folder, log=folder / QEMU_LOG)
            g.started, g.taps, g.ready = True, taps, ""
            g.paused = g.guest_shutdown = False
            self._save(g)
        log.info("%s: started QEMU for %s (pid %d)", self.name, g.name, g.pid)

    async def _enforce(self, g: Guest, taps: tuple[str, ...]) -> None:
        """The limits QEMU's argv cannot carry (tc, cgroups); failures become notes."""
        if g.pid is not None:
            g.qos = await asyncio.to_thread(self._qos.apply, g.config, g.pid, taps)

    async def _release(self, g: Guest) -> None:
        g.qos = None
        proc.reap()
        await asyncio.to_thread(self._qos.release, g.name, g.taps)

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
            # A migration destination has no running guest to power off: quit at once.
            booted = g.state is not S.INCOMING
            g.generation += 1
            generation = g.generation
            self._set(g, S.STOPPING, "stopping")
        how = "stopped"
        try:
            if g.monitor is None and not g.connecting:  # adopted, not connected yet
                await self._reconnect(g, force=True)
            if not booted or not await g.power_off(timeout):
                if booted:
                    how = f"stopped (no power-off within {timeout:g} s: quit)"
                monitor = g.monitor
                if monitor is not None and monitor.state is MonitorState.CONNECTED:
                    with contextlib.suppress(QmpError):
                        await monitor.execute("quit", timeout=2.0)
                if not await g.wait_gone(2.0):
                    how = "stopped (QEMU did not quit: killed)"
                    if booted:
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
        await self._release(g)
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
        await self._release(g)
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

    # -- LiveMigration -------------------------------------------------------------------

    async def prepare_incoming(self, config: GuestConfig, *, listen: str) -> str:
        """See :class:`~podium.drivers.LiveMigration`: QEMU ``-incoming defer -S``, taps as
        for a start, then ``migrate-incoming tcp:<listen>:0``; returns ``tcp:IP:PORT``."""
        _migration.listen_uri(listen)  # a bad address fails before anything starts
        await self._refresh()
        with self._lock:
            g = self._guests.get(config.name)
            if g is not None and g.config == config and g.state is S.INCOMING and g.incoming:
                return g.incoming
            if g is not None and g.state is S.INCOMING and g.config == config:
                g.generation += 1  # adopted before it listened: start it over
                self._set(g, S.STOPPED, "restarted: it was not listening yet")
                proc.sigkill(g.pid, g.uuid)
        await self.create(config)  # GuestBusy if it is active at another epoch
        with self._lock:
            g = self._get(config.name)
            if g.state.active:
                raise GuestBusy(f"guest {g.name!r} is {g.state.value}; it cannot be a destination")
            generation = self._claim(g, S.INCOMING, "preparing for a migration")
        folder = self._folder(g.name)
        try:
            await g.reap_previous()
            await self._lun_volumes(g, incoming=True)
            argv, taps = await self._launcher.prepare(g, folder, incoming=True)
            self._spawn(g, generation, argv, taps, incoming=True)
            await self._enforce(g, taps)
            monitor = await self._launcher.wait_monitor(g, folder, generation)
            uri = await _migration.listen(monitor, listen)
        except BaseException as err:
            await self._start_failed(g, generation, err, MigrationError)
        with self._lock:
            if g.generation != generation or g.state is not S.INCOMING:
                raise GuestKilled(f"guest {g.name!r} was stopped while preparing ({g.message})")
            g.incoming = uri
            self._set(g, S.INCOMING, f"waiting for a migration on {uri}")
            self._save(g)
        log.info("%s: %s waits for its migration on %s", self.name, g.name, uri)
        return uri

    async def migrate_out(
        self,
        name: str,
        uri: str,
        *,
        on_progress: Callable[[MigrationProgress], None] | None = None,
        stall_timeout: float = 30.0,
    ) -> MigrationResult:
        """See :class:`~podium.drivers.LiveMigration`. Once QEMU says ``completed``, the
        source QEMU (stopped, ``postmigrate``) is told to quit, and killed if it lingers."""
        await self._refresh()
        with self._lock:
            g = self._get(name)
            if g.migrated is not None and g.migrated.uri == uri and not g.state.active:
                return g.migrated  # done before (the agent asks again after a restart)
            if g.state is not S.RUNNING:
                raise MigrationError(f"guest {name!r} is {g.state.value}, not running")
        monitor = g.monitor
        if monitor is None:
            raise MigrationError(f"guest {name!r}: its QMP monitor is not connected (retrying)")
        with self._lock:
            resume = g.outgoing == uri  # we told this QEMU to go there: follow, never restart
            g.outgoing = uri
            self._save(g)
        try:
            result = await _migration.migrate(
                monitor, uri, on_progress=on_progress, stall_timeout=stall_timeout, resume=resume
            )
        except QmpError as err:
            raise MigrationError(f"guest {name!r}: migration to {uri}: {err}") from err
        handover = asyncio.ensure_future(self._hand_over(g, monitor, result))
        try:
            await asyncio.shield(handover)
        except asyncio.CancelledError:
            # The destination holds the guest now: a cancel cannot undo that, and a
            # caller told "cancelled" would give the guest up. Finish the handover.
            await handover
            _migration.uncancel()
        log.info("%s: %s migrated to %s (%s)", self.name, name, uri, result)
        return result

    async def _hand_over(self, g: Guest, monitor: Monitor, result: MigrationResult) -> None:
        """The migration completed: the source QEMU (``postmigrate``) quits, or is killed."""
        uri = result.uri
        with self._lock:  # the guest belongs to the destination from here on
            g.generation += 1
            g.migrated = result
            self._set(g, S.STOPPING, f"migrated to {uri}; source QEMU exiting")
            self._save(g)
        try:
            with contextlib.suppress(QmpError):
                await monitor.execute("quit", timeout=2.0)
            if not await g.wait_gone(5.0):
                proc.sigkill(g.pid, g.uuid)
                if not await g.wait_gone(5.0):
                    raise QemuError(f"guest {g.name!r}: source QEMU (pid {g.pid}) does not exit")
        finally:
            await g.close_monitor()
        await self._release(g)
        with self._lock:
            self._set(g, S.STOPPED, f"migrated to {uri}")
            g.started = False
            self._save(g)

    async def activate(self, name: str) -> GuestInfo:
        """See :class:`~podium.drivers.LiveMigration`: ``cont``, then ``announce-self``."""
        await self._refresh()
        with self._lock:
            g = self._get(name)
            if g.state is S.RUNNING:
                return g.info()
            if g.state is not S.INCOMING:
                raise MigrationError(f"guest {name!r} is {g.state.value}, not incoming")
            if not g.incoming:
                raise MigrationError(f"guest {name!r} is still being prepared as a destination")
            generation = g.generation
        if g.monitor is None and not g.connecting:
            await self._reconnect(g, force=True)
        monitor = g.monitor
        if monitor is None:
            raise MigrationError(f"guest {name!r}: its QMP monitor is not connected (retrying)")
        try:
            done, why = await _migration.incoming_done(monitor)
            if not done:
                raise MigrationError(f"guest {name!r}: its migration has not completed ({why})")
            await monitor.execute("cont")
        except QmpError as err:
            raise MigrationError(f"guest {name!r}: activating: {err}") from err
        try:  # RARPs from its NICs, so switches learn where its MACs are now
            await monitor.execute("announce-self", _migration.ANNOUNCE)
        except QmpError as err:
            log.warning("%s: %s: announce-self: %s", self.name, name, err)
        with self._lock:
            if g.generation != generation or g.state is not S.INCOMING:
                raise GuestKilled(f"guest {name!r} was stopped while activating ({g.message})")
            self._activated(g)
            return g.info()

    def _activated(self, g: Guest) -> None:
        """An incoming guest runs here now. Its console here starts after its boot, so the
        ready line it printed elsewhere is noted in it (as the guest's init writes it)."""
        g.ready = ready_line(layout(g.config, with_network=self.network is not None))
        note = f"podium: {g.name} runs here after a live migration; it booted with: {g.ready}\n"
        try:
            with (self._folder(g.name) / CONSOLE).open("a") as console:  # QEMU appends too
                console.write(note)
        except OSError as err:
            log.warning("%s: %s: console note: %s", self.name, g.name, err)
        g.incoming, g.paused = None, False
        self._set(g, S.RUNNING, g.running_message())
        self._save(g)

    # -- BlockBackup ---------------------------------------------------------------------

    async def backup(
        self,
        name: str,
        request: BackupRequest,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> BackupResult:
        """See :class:`~podium.drivers.BlockBackup`: one transaction of ``blockdev-backup``
        of the root node and each LUN's node, into ``backups_dir`` (target ``local``) or
        ``replica_dir`` (``replica``), a file per volume (see ``_backup``)."""
        base = target_dir(request.target, self.backups_dir, self.replica_dir)
        with self._lock:
            config = self._get(name).config
        luns = lun_nodes(layout(config, with_network=self.network is not None).hbas)
        volumes = backup_volumes(base, name, request, root_node=ROOT_NODE, luns=luns)
        done = await asyncio.to_thread(existing, volumes, request.id, self._qemu_img)
        if done is not None:  # asked again (an agent restarted): whatever the guest does now
            return done
        await self._refresh()
        with self._lock:
            g = self._get(name)
            if g.state is not S.RUNNING:
                raise BackupError(f"guest {name!r} is {g.state.value}, not running")
        monitor = g.monitor
        if monitor is None:
            raise BackupError(f"guest {name!r}: its QMP monitor is not connected (retrying)")
        job = Backup(
            monitor,
            volumes=volumes,
            request=request,
            qemu_img=self._qemu_img,
            on_progress=on_progress,
        )
        result = await job.run()
        log.info("%s: backed up %s: %s", self.name, name, result)
        return result

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
                            self._set(g, S.RUNNING, g.running_message())
                    elif event.name == "SHUTDOWN" and event.data.get("guest"):
                        g.guest_shutdown = True
                lost = monitor.state is not MonitorState.CONNECTED
                if (not g.state.active or lost) and g.state is not S.STARTING:
                    await g.close_monitor()
            # (an incoming guest whose URI is not known yet is still being prepared)
            settled = g.state is S.RUNNING or (g.state is S.INCOMING and bool(g.incoming))
            if settled and not proc.is_running(g.pid, g.uuid):
                self._exited(g)
            elif settled and g.monitor is None and not g.connecting:
                await self._reconnect(g)

    def _exited(self, g: Guest) -> None:
        with self._lock:
            if g.state not in (S.RUNNING, S.INCOMING) or proc.is_running(g.pid, g.uuid):
                return
            g.generation += 1
            why = tail(self._folder(g.name) / QEMU_LOG, 2) or "no message"
            if g.state is S.INCOMING:  # the source gave up, or sent a state it could not load
                self._set(g, S.FAILED, f"QEMU exited while waiting for a migration: {why}")
            elif g.guest_shutdown:
                self._set(g, S.STOPPED, "the guest powered itself off")
            else:
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
        if g.state is S.INCOMING and status == "running":  # activated before an agent restart
            self._activated(g)
        elif g.state is S.RUNNING:
            self._set(g, S.RUNNING, g.running_message())

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
                self._set(g, S.RUNNING, g.running_message())
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

    def qos(self, name: str) -> GuestQos | None:
        """The QoS the guest's QEMU is held to, with notes on what is not enforced (None:
        not started by this driver, or stopped)."""
        with self._lock:
            g = self._guests.get(name)
            return g.qos if g is not None and g.state.active else None

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

    async def flow_counters(self) -> dict[tuple[str, str], int] | None:
        """See :class:`~podium.drivers.FlowSource`: nftables counters on the host switch
        (``_flows``); ``None`` without a network."""
        if self._flows is None:
            return None
        with self._lock:
            configs = [g.config for g in self._guests.values()]
        return await asyncio.to_thread(measure_flows, self._flows, configs)

    async def guest_usage(self) -> dict[str, Resources | dict[str, float]] | None:
        """See :class:`~podium.drivers.UsageSource`: /proc, QMP and tap counters (``_usage``)."""
        with self._lock:
            probes = [
                Probe(g.name, g.pid, memory_of(g.config), g.monitor, g.taps)
                for g in self._guests.values()
                if g.state is S.RUNNING and g.pid is not None
            ]
        return dict(await self._usage.measure(probes))

    async def close(self) -> None:
        """Disconnect every QMP monitor; the QEMUs keep running (a new driver adopts them)."""
        with self._lock:
            guests = builtins.list(self._guests.values())
        for g in guests:
            await g.close_monitor()
