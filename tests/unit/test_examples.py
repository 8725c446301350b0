"""Every file in examples/ is a valid manifest, and qos.yaml stores QoS on every dimension."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.model import DIMENSIONS, limits_of, parse_manifest_text, shares_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    manifests = parse_manifest_text(path.read_text(), source=str(path))
    assert manifests, f"{path} holds no manifest"


def test_the_qos_example_sets_a_limit_on_every_dimension() -> None:
    (app,) = parse_manifest_text((EXAMPLES / "qos.yaml").read_text())
    assert set(limits_of(app.spec)) == set(DIMENSIONS)
    assert app.spec["request"]["iops"] == 50 and app.spec["request"]["net_mbps"] == 10
    assert shares_of(app.spec)["cpu"] == 200
