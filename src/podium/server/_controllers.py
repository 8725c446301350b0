"""Running the controllers only while this server leads.

::

    LeaderLoop ──> LeaderElection(store).lead() ──(elected)──> ControllerManager.run(leadership)
        ^                                              │ leadership lost / store error
        └───────────── campaign again after a pause <──┘

``podium.controller`` and ``podium.scheduler`` are imported when the loop is
resolved (at server start, :meth:`LeaderLoop.resolve`): a broken install fails
at startup with one clear line instead of at the first election.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from podium.api import Metrics
from podium.server._settings import ServerError
from podium.state import ClusterState
from podium.store import Store

if TYPE_CHECKING:
    from podium.controller import ControllerManager, LeaderElection, MigrationLimits
    from podium.controller._controllers import ControllerFactory
    from podium.scheduler import Scheduler

log = logging.getLogger(__name__)

ControllerRunner = Callable[[ClusterState, Store], Awaitable[None]]
RETRY_DELAY = 1.0


class LeaderLoop:
    """The default controller runner: campaign, run the controllers while leading, repeat.

    ``leading`` is True exactly while this server holds the leadership (``/healthz``
    reports it). Loop counts of the running manager feed ``metrics``. Runs until
    cancelled; resigns leadership on the way out.
    """

    def __init__(
        self,
        *,
        host_ttl: int,
        leader_ttl: int,
        identity: str,
        metrics: Metrics | None = None,
        max_migrations: int = 2,
        max_migrations_per_host: int = 1,
        migration_prepare_timeout: float = 60.0,
        host_suspect_after: float | None = None,
        controllers: tuple[ControllerFactory, ...] | None = None,
        wrap_scheduler: Callable[[Scheduler], Scheduler] = lambda s: s,
    ) -> None:
        self.controllers = controllers  # None: the default set
        self.wrap_scheduler = wrap_scheduler  # e.g. keep --spare-host hosts for failover
        self.host_ttl = host_ttl
        self.host_suspect_after = host_suspect_after
        self.migration_limits = (max_migrations, max_migrations_per_host, migration_prepare_timeout)
        self.leader_ttl = leader_ttl
        self.identity = identity
        self.metrics = metrics
        self.leading = False
        self._election: type[LeaderElection] | None = None
        self._manager: type[ControllerManager] | None = None
        self._limits: type[MigrationLimits] | None = None
        self._scheduler: Callable[[], Scheduler] | None = None
        self._default_controllers: tuple[ControllerFactory, ...] = ()

    def resolve(self) -> None:
        """Import the controllers and the scheduler. Raises :class:`ServerError`."""
        try:
            from podium.controller import (  # noqa: PLC0415
                ControllerManager,
                LeaderElection,
                MigrationLimits,
            )
            from podium.controller._controllers import CONTROLLERS  # noqa: PLC0415
            from podium.scheduler import default_scheduler  # noqa: PLC0415
        except ImportError as err:
            raise ServerError(
                f"cannot run the controllers ({err}): reinstall podium, or serve the API only"
            ) from err
        self._election, self._manager, self._scheduler = (
            LeaderElection,
            ControllerManager,
            default_scheduler,
        )
        self._limits = MigrationLimits
        self._default_controllers = CONTROLLERS

    async def __call__(self, state: ClusterState, store: Store) -> None:
        if self._election is None or self._manager is None or self._scheduler is None:
            self.resolve()
        assert self._election and self._manager and self._scheduler and self._limits
        most, per_host, prepare = self.migration_limits
        limits = self._limits(max_migrations=most, max_per_host=per_host, prepare_timeout=prepare)
        election = self._election(store, ttl=self.leader_ttl, identity=self.identity)
        while True:
            try:
                async with election.lead() as leadership:
                    self.leading = True
                    log.info("elected leader (%s): running the controllers", self.identity)
                    manager = self._manager(
                        state,
                        self.wrap_scheduler(self._scheduler()),
                        host_ttl=self.host_ttl,
                        migrations=limits,
                        suspect_after=self.host_suspect_after,
                        controllers=self.controllers or self._default_controllers,
                    )
                    if self.metrics is not None:
                        self.metrics.track_controller_stats(manager.stats)
                    await manager.run(leadership)
                log.warning("leadership lost; campaigning again")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controllers stopped; campaigning again in %.0f s", RETRY_DELAY)
            finally:
                if self.leading:
                    log.info("%s no longer leads", self.identity)
                self.leading = False
            await asyncio.sleep(RETRY_DELAY)
