"""The driver protocol: how an agent runs guests on its host.

A driver owns the local reality of one host: guest processes (QEMU) or their model
(sim). The agent decides *what* should run; the driver only does it and says what is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from podium.model import Resources


class DriverError(Exception):
    """Root of driver errors (``podium.drivers``).

    ::

        DriverError
        ├── GuestNotFound          the driver does not know the guest
        ├── GuestBusy              the guest is active; stop it first
        ├── InsufficientResources  the guest does not fit in what is free on the host
        └── GuestKilled            the guest was killed (fenced, crashed) while starting
    """

    retryable: bool = False


class GuestNotFound(DriverError):
    """The driver does not know the guest (never created, or destroyed)."""


class GuestBusy(DriverError):
    """The operation needs a stopped guest, and this one is active."""


class InsufficientResources(DriverError):
    """Starting the guest would exceed the host's capacity in some dimension."""

    retryable = True  # capacity may free up


class GuestKilled(DriverError):
    """The guest was killed (fence, crash) before it finished starting."""

    retryable = True


class DriverGuestState(enum.StrEnum):
    """A guest's state on its host, as the driver sees it."""

    DEFINED = "defined"  # created, never started
    STARTING = "starting"  # start in progress; counts against capacity
    RUNNING = "running"  # up; counts against capacity
    STOPPING = "stopping"  # graceful stop in progress; counts against capacity
    STOPPED = "stopped"  # not running (stopped, or killed); resources free
    FAILED = "failed"  # could not start, or died; resources free; see message

    @property
    def active(self) -> bool:
        """Whether the guest holds host resources (a process exists or is coming up)."""
        return self in (
            DriverGuestState.STARTING,
            DriverGuestState.RUNNING,
            DriverGuestState.STOPPING,
        )


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """What to run: one guest at one binding epoch. ``spec`` is the guest's JSON spec."""

    name: str
    uid: str
    epoch: int
    spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> Resources:
        return Resources.from_dict(dict(self.spec.get("request", {})))


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """What the driver knows of one guest."""

    name: str
    uid: str
    epoch: int
    state: DriverGuestState
    message: str = ""
    since: float = 0.0  # clock time of the last state change


@runtime_checkable
class Driver(Protocol):
    """Runs guests on one host. One instance per host; the agent is its only caller.

    Contract shared by every implementation (``tests/unit/drivers`` runs one suite
    over each):

    - Async methods are called from one event loop; the agent never runs two
      operations on the same guest at once, but runs operations on different guests
      concurrently.
    - ``kill`` and ``kill_all`` are synchronous and thread-safe: the agent's watchdog
      thread calls them to fence the host even when the event loop is blocked. They
      must not wait on the event loop and must finish promptly (well under 100 ms).
    - Surviving an agent restart: a new driver instance on the same host reports the
      guests already running through ``list`` (adoption); creating the driver never
      stops anything.
    """

    @property
    def kind(self) -> str:
        """Registry name of the driver (``"sim"``, ``"qemu"``), sent at registration."""
        ...

    async def create(self, config: GuestConfig) -> GuestInfo:
        """Define a guest (or update a stopped one to ``config``'s epoch and spec).

        Idempotent: the same config again is a no-op. Raises :class:`GuestBusy` if the
        guest is active at another epoch (stop it first). Starts nothing.
        """
        ...

    async def start(self, name: str) -> GuestInfo:
        """Start a created guest; return once it runs.

        Idempotent: a running guest is returned as is. Raises :class:`GuestNotFound`;
        :class:`InsufficientResources` (nothing started, guest left ``failed`` with the
        reason); :class:`GuestKilled` if killed while starting (left ``stopped``); other
        :class:`DriverError` (left ``failed``). Cancelled: the guest is left ``stopped``.
        """
        ...

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        """Stop a guest gracefully, killing it after ``timeout`` seconds.

        Idempotent; stopping an unknown guest returns ``None``. Leaves it ``stopped``.
        """
        ...

    def kill(self, name: str) -> None:
        """Stop a guest now, without grace. Idempotent; unknown guests are ignored.

        Synchronous and thread-safe (see the class docstring). Leaves it ``stopped``;
        a start in progress then raises :class:`GuestKilled`.
        """
        ...

    def kill_all(self) -> list[str]:
        """Kill every active guest (self-fencing); return their names. Thread-safe."""
        ...

    async def destroy(self, name: str) -> None:
        """Forget a stopped guest and free what it held locally (not shared volumes).

        Idempotent. Raises :class:`GuestBusy` if the guest is active.
        """
        ...

    async def list(self) -> list[GuestInfo]:
        """Every guest the driver knows, active or not (sorted by name)."""
        ...

    async def status(self, name: str) -> GuestInfo | None:
        """One guest, or ``None`` if the driver does not know it."""
        ...
