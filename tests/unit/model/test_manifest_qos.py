"""QoS per dimension (reservation, limit, shares) and placement constraints in manifests."""

from __future__ import annotations

import pytest

from podium.model import ManifestError, limits_of, parse_manifest_text, shares_of
from podium.model import toleration_matches as matches


def spec(text: str) -> dict[str, object]:
    return parse_manifest_text("kind: App\nname: web\nspec:\n" + text)[0].spec


def test_reservations_fold_into_the_request_and_limits_and_shares_are_kept() -> None:
    s = spec(
        "  replicas: 2\n  request: {cpu: 1, memory_mib: 256}\n"
        "  qos: {iops: {reservation: 100, limit: 500, shares: 200}, cpu: {limit: 2}}\n"
    )
    assert s["request"] == {"cpu": 1.0, "memory_mib": 256, "iops": 100, "net_mbps": 0}
    assert s["qos"] == {"cpu": {"limit": 2.0}, "iops": {"limit": 500.0, "shares": 200}}
    assert limits_of(s) == {"cpu": 2.0, "iops": 500.0}
    assert shares_of(s) == {"cpu": 100, "memory_mib": 100, "iops": 200, "net_mbps": 100}


def test_a_spec_without_qos_or_constraints_stores_none_of_them() -> None:
    s = spec("  replicas: 1\n")
    assert not {"qos", "near", "talks_to", "tolerations"} & set(s)
    assert limits_of(s) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("request: {iops: 10}, qos: {iops: {reservation: 20}}", "give the reservation once"),
        ("qos: {iops: {reservation: 20, limit: 10}}", "below the reservation 20"),
        ("request: {net_mbps: 50}, qos: {net_mbps: {limit: 10}}", "below the reservation 50"),
        ("qos: {disk: {limit: 10}}", "field 'spec.qos.disk' unknown field"),
        ("qos: {cpu: {shares: 0}}", "spec.qos.cpu.shares"),
        ("near: [Db]", "'Db' is not a valid app name"),
        ("talks_to: [db, db]", "lists an entry twice"),
        ("tolerations: ['a b']", "'a b' is not a valid toleration: use KEY or KEY=VALUE"),
    ],
)
def test_bad_qos_and_constraints_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match="document 1") as err:
        spec("  replicas: 1\n" + "".join(f"  {part}\n" for part in _lines(text)))
    assert message in str(err.value)


def _lines(text: str) -> list[str]:
    """``a: x, b: y`` (top-level commas only) -> ``["a: x", "b: y"]``."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += 1 if ch in "{[" else -1 if ch in "}]" else 0
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()]


def test_replicas_inherit_qos_and_constraints() -> None:
    from podium.controller._plans import replica_spec  # noqa: PLC0415

    s = spec("  replicas: 1\n  qos: {iops: {limit: 300}}\n  near: [db]\n  tolerations: [gpu]\n")
    replica = replica_spec("web", s)
    assert replica["qos"] == {"iops": {"limit": 300.0}}
    assert replica["near"] == ["db"] and replica["tolerations"] == ["gpu"]


def test_tolerations_match_a_key_or_a_key_and_value() -> None:
    assert matches("gpu", "gpu", "a100") and matches("gpu=a100", "gpu", "a100")
    assert not matches("gpu=h100", "gpu", "a100") and not matches("dedicated", "gpu", "")
