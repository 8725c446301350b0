"""Booting one guest: what a start needs besides the guest itself, and the wait for ready.

::

    prepare: image (built once) ─ accelerator (probed once) ─ volume (qemu-img: restored
             from a backup, or empty) ─ taps (each NIC on its VLAN) ─> argv
             (the driver then spawns under its lock)
    wait_ready: QMP socket appears ─> Monitor.connect ─┐
                console.log ─> "PODIUM-READY ..." ─────┴─> ready   (QEMU gone: failed)
    wait_monitor: the same without the ready line (a migration destination does not boot)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from pathlib import Path

from podium.drivers._protocol import MigrationError
from podium.drivers.net import ChecksumAware, HostNetwork, NetworkError
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._argv import (
    CONSOLE,
    OBSERVE_SOCKET,
    PIDFILE,
    QMP_SOCKET,
    layout,
    qemu_argv,
)
from podium.drivers.qemu._errors import QemuStartError
from podium.drivers.qemu._guest import Guest
from podium.drivers.qemu._image import Image, build_image
from podium.drivers.qemu._initramfs import READY_PREFIX, find_ready_line
from podium.drivers.qemu._qmp import Monitor
from podium.drivers.qemu._record import tail

QEMU_LOG = "qemu.log"


class Killed(Exception):
    """The start lost its guest to a stop or kill (the driver raises GuestKilled)."""


class Launcher:
    """Starts guests of one host: image, accelerator, volumes, taps, readiness."""

    def __init__(
        self,
        *,
        image: Image | None,
        image_cache: Path | None,
        network: HostNetwork | None,
        accel: str | None,
        qemu: str,
        qemu_img: str,
        boot_timeout: float,
        qmp_timeout: float,
    ) -> None:
        self.network = network
        self.qemu = qemu
        self._image = image
        self._image_cache = image_cache
        self._accel = accel
        self._accel_probe: concurrent.futures.Future[str] | None = None
        if accel is None:
            # The KVM probe can take 3 s (where KVM hangs): run it now, in the background,
            # so the first guest start or incoming migration does not wait for it.
            self._accel_probe = concurrent.futures.Future()
            threading.Thread(target=self._probe, name="qemu-accel-probe", daemon=True).start()
        self._qemu_img = qemu_img
        self.boot_timeout = boot_timeout
        self.qmp_timeout = qmp_timeout
        self._image_lock = asyncio.Lock()

    def _probe(self) -> None:
        assert self._accel_probe is not None
        try:
            self._accel_probe.set_result(proc.choose_accel(self.qemu))
        except BaseException as err:  # handed to whoever needs the answer
            self._accel_probe.set_exception(err)

    async def accel(self) -> str:
        """``kvm`` or ``tcg``: as given, else the background probe's answer."""
        if self._accel is None:
            assert self._accel_probe is not None
            self._accel = await asyncio.wrap_future(self._accel_probe)
        return self._accel

    async def image(self) -> Image:
        async with self._image_lock:
            if self._image is None:
                self._image = await asyncio.to_thread(build_image, self._image_cache)
            return self._image

    async def volume(self, g: Guest) -> None:
        """Make the guest's volume if it does not exist: from its backup, else empty."""
        guest = layout(g.config, with_network=self.network is not None)
        if guest.restore_from is not None:
            await asyncio.to_thread(
                proc.restore_volume, g.volume, guest.restore_from, qemu_img=self._qemu_img
            )
        await asyncio.to_thread(
            proc.create_volume, g.volume, guest.disk_gib, qemu_img=self._qemu_img
        )

    async def prepare(
        self, g: Guest, folder: Path, *, incoming: bool = False
    ) -> tuple[list[str], tuple[str, ...]]:
        """Make the image, volume and taps ready; return QEMU's argv and the taps.

        ``incoming``: a migration destination, whose volume must already be there (it is
        the source's, on shared storage); raises :class:`MigrationError` otherwise.
        """
        image = await self.image()
        accel = await self.accel()
        guest = layout(g.config, with_network=self.network is not None)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if not incoming:
            await self.volume(g)
        elif not await asyncio.to_thread(g.volume.is_file):
            raise MigrationError(
                f"{g.name}: volume {g.volume} is not here; live migration needs the "
                "volumes on storage both hosts share"
            )
        taps: list[str] = []
        offload: list[bool] = []
        if self.network is not None:
            network = self.network
            for i, nic in enumerate(guest.nics):
                try:
                    tap = await asyncio.to_thread(network.attach, g.name, i, nic.mac, vlan=nic.vlan)
                except NetworkError as err:
                    raise QemuStartError(f"{g.name}: {err}") from err
                taps.append(tap)
                offload.append(
                    network.checksum_offload(nic.vlan)
                    if isinstance(network, ChecksumAware)
                    else True
                )
        argv = qemu_argv(
            guest,
            qemu=self.qemu,
            accel=accel,
            kernel=image.kernel,
            initrd=image.initrd,
            volume=g.volume,
            taps=taps,
            incoming=incoming,
            checksum_offload=offload,
        )
        for stale in (CONSOLE, QMP_SOCKET, OBSERVE_SOCKET, PIDFILE):
            (folder / stale).unlink(missing_ok=True)
        return argv, tuple(taps)

    async def wait_ready(self, g: Guest, folder: Path, generation: int) -> None:
        """Connect QMP and wait for the ready line on the console (bounded).

        Raises :class:`Killed` once ``g.generation`` moves on, :class:`QemuStartError`
        if QEMU exits or the line does not come in time, ``QmpError`` if QMP fails.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.boot_timeout
        console, offset, pending = folder / CONSOLE, 0, b""
        while True:
            if g.generation != generation:
                raise Killed
            if not proc.is_running(g.pid, g.uuid):
                why = tail(folder / QEMU_LOG) or tail(console) or "no output"
                raise QemuStartError(f"QEMU exited while starting {g.name}: {why}")
            if g.monitor is None and (folder / QMP_SOCKET).exists():
                monitor = Monitor(folder / QMP_SOCKET, name=g.name)
                await monitor.connect(timeout=self.qmp_timeout)
                g.monitor = monitor
            with contextlib.suppress(FileNotFoundError), console.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
                offset += len(chunk)
                pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            g.ready = find_ready_line(b"\n".join(lines).decode(errors="replace")) or g.ready
            if g.ready and g.monitor is not None:
                return
            if loop.time() >= deadline:
                why = tail(console) or "empty console"
                limit = f"{self.boot_timeout:g} s"
                raise QemuStartError(f"{g.name}: no {READY_PREFIX} line in {limit}: {why}")
            await asyncio.sleep(0.05)

    async def wait_monitor(self, g: Guest, folder: Path, generation: int) -> Monitor:
        """Connect QMP of a QEMU that does not boot (yet): a migration destination.

        Raises :class:`Killed`, :class:`QemuStartError` (QEMU exited, or no monitor within
        ``boot_timeout``), ``QmpError``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.boot_timeout
        while g.monitor is None:
            if g.generation != generation:
                raise Killed
            if not proc.is_running(g.pid, g.uuid):
                why = tail(folder / QEMU_LOG) or "no output"
                raise QemuStartError(f"QEMU exited while starting {g.name}: {why}")
            if (folder / QMP_SOCKET).exists():
                monitor = Monitor(folder / QMP_SOCKET, name=g.name)
                await monitor.connect(timeout=self.qmp_timeout)
                g.monitor = monitor
            elif loop.time() >= deadline:
                limit = f"{self.boot_timeout:g} s"
                raise QemuStartError(f"{g.name}: QEMU opened no QMP socket in {limit}")
            else:
                await asyncio.sleep(0.02)
        return g.monitor
