"""The public surface of podium.agent is what we mean it to be (podium.client relies on it)."""

import inspect

import podium.agent


def test_exports() -> None:
    assert sorted(podium.agent.__all__) == [
        "Activate",
        "Agent",
        "AgentError",
        "AgentState",
        "CancelMigration",
        "DEFAULT_WATCHDOG",
        "Fence",
        "FenceReport",
        "LeaseExpired",
        "LinkError",
        "MigrateOut",
        "PrepareIncoming",
        "Registration",
        "RunBackup",
        "ServerLink",
        "StartGuest",
        "StopGuest",
        "Watchdog",
        "plan_local",
        "reports",
        "run_many",
    ]


def test_link_protocol_matches_the_contract() -> None:
    link = podium.agent.ServerLink
    params = {
        name: list(inspect.signature(getattr(link, name)).parameters)[1:]
        for name in (
            "register",
            "keepalive",
            "assignments",
            "watch_assignments",
            "report",
            "report_migration",
            "report_backup",
            "push_console",
            "close",
        )
    }
    assert params == {
        "register": ["name", "capacity", "labels", "driver", "agent_version", "fenced", "taints"],
        "keepalive": ["host", "lease"],
        "assignments": ["host"],
        "watch_assignments": ["host", "from_revision"],
        "report": ["host", "reports"],
        "report_migration": ["host", "report"],
        "report_backup": ["host", "report"],
        "push_console": ["host", "guest", "text"],
        "close": [],
    }
    assert not inspect.iscoroutinefunction(link.watch_assignments)
    for name in ("report_migration", "report_backup", "push_console"):
        assert inspect.iscoroutinefunction(getattr(link, name))
    fields = list(podium.agent.Registration.__dataclass_fields__)
    assert fields == ["host_token", "lease", "ttl", "keepalive_interval"]
    assert podium.agent.LinkError.retryable and not podium.agent.LeaseExpired.retryable
