"""The public surface of podium.scheduler is what we mean it to be."""

import podium.scheduler


def test_exports() -> None:
    assert sorted(podium.scheduler.__all__) == [
        "BatchState",
        "BestFitScore",
        "FilterPlugin",
        "FitFilter",
        "FrameworkScheduler",
        "GuestRequest",
        "HealthScore",
        "HostRow",
        "HostStateFilter",
        "HostTable",
        "MigrationPlanner",
        "NearFilter",
        "PlacementRequest",
        "PlacementResult",
        "ReadyFilter",
        "Scheduler",
        "ScorePlugin",
        "SiteFilter",
        "SpreadFilter",
        "SpreadScore",
        "TaintFilter",
        "TrafficIndex",
        "TrafficScore",
        "UNHEALTHY_RISK",
        "default_scheduler",
        "solve_instance",
        "verify",
    ]
    assert isinstance(podium.scheduler.default_scheduler(), podium.scheduler.Scheduler)
