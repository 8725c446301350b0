"""``podium plan`` as a user runs it: files in, placements out, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podium.cli import app as cli_app

CAP = {"cpu": 16, "memory_mib": 65536, "iops": 10000, "net_mbps": 10000}
INSTANCE = {
    "hosts": [{"name": f"h{i}", "capacity": CAP, "labels": {"rack": f"r{i}"}} for i in range(4)],
    "guests": [
        {
            "name": f"web-{i}",
            "app": "web",
            "request": {"cpu": 2, "memory_mib": 2048},
            "spread": "host",
        }
        for i in range(3)
    ]
    + [{"name": f"batch-{i}", "request": {"cpu": 4, "memory_mib": 4096}} for i in range(4)],
}


def run_plan(tmp_path: Path, instance: object, *extra: str) -> tuple[int, str, Path]:
    source, target = tmp_path / "instance.json", tmp_path / "placements.json"
    source.write_text(instance if isinstance(instance, str) else json.dumps(instance))
    result = CliRunner().invoke(
        cli_app, ["plan", "--input", str(source), "--output", str(target), *extra]
    )
    return result.exit_code, result.stderr, target


def test_plan_writes_placements_and_a_summary(tmp_path: Path) -> None:
    code, stderr, target = run_plan(tmp_path, INSTANCE)
    assert code == 0, stderr
    out = json.loads(target.read_text())
    assert set(out["placements"]) == {g["name"] for g in INSTANCE["guests"]}
    assert len({out["placements"][f"web-{i}"] for i in range(3)}) == 3  # spread host
    assert out["hosts_used"] == 3  # 22 cpu on 16-cpu hosts, and 3 replicas apart
    assert out["lower_bound"]["per_dimension"] == {
        "cpu": 2, "memory_mib": 1, "iops": 0, "net_mbps": 0, "spread": 3
    }  # fmt: skip
    assert out["ratio"] == 1.0
    assert out["objective"] == "pack"
    assert out["unplaced"] == []
    assert "placed 7/7 guests on 3 hosts (lower bound 3" in stderr


def test_plan_balance_spreads_the_load(tmp_path: Path) -> None:
    code, stderr, target = run_plan(tmp_path, INSTANCE, "--objective", "balance")
    assert code == 0, stderr
    out = json.loads(target.read_text())
    assert out["objective"] == "balance"
    assert out["hosts_used"] == 4


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ("{not json", "not valid JSON at line 1 column 2"),
        ({"hosts": [{"name": "h1"}], "guests": []}, "hosts[0].capacity: missing or not an object"),
        (
            {"hosts": [], "guests": [{"name": "g", "request": {"cpu": "two"}}]},
            "guests[0].request.cpu: expected a number >= 0, got 'two'",
        ),
        ([1, 2], "the instance is a list, not an object"),
    ],
)
def test_plan_rejects_a_bad_instance_with_the_file_and_field(
    tmp_path: Path, instance: object, message: str
) -> None:
    code, stderr, target = run_plan(tmp_path, instance)
    assert code == 1
    assert "instance.json" in stderr
    assert message in " ".join(stderr.split())
    assert not target.exists()


def test_plan_rejects_a_missing_file_and_an_unknown_objective(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["plan", "-i", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o.json")]
    )
    assert result.exit_code == 1
    assert "no such file" in result.stderr
    code, stderr, _ = run_plan(tmp_path, INSTANCE, "--objective", "fastest")
    assert code == 1
    assert "use one of pack, balance" in stderr
