"""The public surface of podium.controller is what we mean it to be."""

import podium.controller


def test_exports() -> None:
    assert sorted(podium.controller.__all__) == [
        "AppController",
        "BackupSweeper",
        "ControllerError",
        "ControllerManager",
        "DrainController",
        "EventRecorder",
        "HostController",
        "LeaderElection",
        "Leadership",
        "MigrationController",
        "MigrationLimits",
        "PermanentError",
        "PlacementController",
        "TemporaryError",
        "WorkQueue",
        "plan_app",
        "plan_drain",
        "plan_host",
        "plan_migrations",
        "plan_placement",
    ]
    assert issubclass(podium.controller.TemporaryError, podium.controller.ControllerError)
    assert issubclass(podium.controller.PermanentError, podium.controller.ControllerError)
