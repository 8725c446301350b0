"""Errors of the qemu driver, under the driver root :class:`~podium.drivers.DriverError`."""

from __future__ import annotations

from podium.drivers._protocol import DriverError


class QemuError(DriverError):
    """Root of ``podium.drivers.qemu`` errors.

    ::

        DriverError
        └── QemuError              root of this package
            ├── ImageError         the guest image cannot be built (says what to install)
            ├── QemuStartError     QEMU exited, or the guest showed no ready line in time
            └── QmpError           a QMP command failed or the socket is gone (retryable)
    """


class ImageError(QemuError):
    """The guest image cannot be built: a tool or package is missing, or a step failed."""


class QemuStartError(QemuError):
    """QEMU exited while starting, or the guest printed no ready line in time.

    The message ends with the tail of QEMU's log or the guest console.
    """

    retryable = True


class QmpError(QemuError):
    """A QMP command failed, or the monitor socket is gone (QEMU exited)."""

    retryable = True
