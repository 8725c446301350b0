"""The server's admission hook, rebalancer and rebalance controller, from its settings.

::

    ServerSettings ──> AdmissionControl(K, spares)     ──> create_app(admission=...)
                   ──> Rebalancer(policy, spares)      ──> create_app(rebalancer=...)
                   ──> CONTROLLERS + rebalance (only with --rebalance) ──> LeaderLoop
                   ──> SpareScheduler(spares): new guests never on spares ──> LeaderLoop
"""

from __future__ import annotations

from dataclasses import dataclass

from podium.controller._admission import AdmissionControl
from podium.controller._controllers import CONTROLLERS, ControllerFactory
from podium.controller._rebalance import Rebalancer, rebalance_controller
from podium.scheduler import Scheduler
from podium.scheduler._rebalance import RebalancePolicy
from podium.scheduler._spares import SpareScheduler
from podium.server._settings import ServerSettings, check_placement_flags


@dataclass(frozen=True)
class PlacementServices:
    admission: AdmissionControl | None
    rebalancer: Rebalancer
    controllers: tuple[ControllerFactory, ...]
    spares: frozenset[str] = frozenset()

    def wrap_scheduler(self, scheduler: Scheduler) -> Scheduler:
        """The controllers' scheduler, keeping the spares for moving guests."""
        return SpareScheduler(scheduler, self.spares) if self.spares else scheduler


def placement_services(settings: ServerSettings) -> PlacementServices:
    """What ``serve`` wires in. Raises :class:`ServerError` for flags out of range."""
    check_placement_flags(settings)
    spares = frozenset(settings.spare_hosts)
    policy = RebalancePolicy(
        hot=settings.rebalance_hot,
        max_concurrent=settings.rebalance_max_concurrent,
        max_per_hour=settings.rebalance_max_per_hour,
        window=settings.rebalance_window,
    )
    rebalancer = Rebalancer(policy, spares)
    admission = None
    if settings.failures_to_tolerate > 0:
        admission = AdmissionControl(settings.failures_to_tolerate, spares)
    controllers = CONTROLLERS
    if settings.rebalance:
        controllers = (*CONTROLLERS, rebalance_controller(rebalancer, settings.rebalance_interval))
    return PlacementServices(admission, rebalancer, controllers, spares)
