"""Manifest validation: every error names file, document, field and what is expected."""

from __future__ import annotations

import pytest

from podium.model import Kind, ManifestError, parse_manifest_text

GOOD = """
kind: App
name: web
spec:
  replicas: 3
  image: tiny
  request: {cpu: 1, memory_mib: 128, iops: 100, net_mbps: 10}
  spread: host
---
kind: Guest
name: db-1
spec:
  image: tiny
  request: {cpu: 2, memory_mib: 256, iops: 500, net_mbps: 50}
"""


def test_parses_design_example() -> None:
    manifests = parse_manifest_text(GOOD, source="f.yaml")
    assert [(m.kind, m.name) for m in manifests] == [(Kind.APP, "web"), (Kind.GUEST, "db-1")]
    assert manifests[0].spec["spread"] == "host"
    assert manifests[0].spec["request"] == {
        "cpu": 1.0,
        "memory_mib": 128,
        "iops": 100,
        "net_mbps": 10,
    }
    assert manifests[1].spec["running"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kind: App\nname: web\nspec: {replicas: -1}\n",
            "f.yaml: document 1: field 'spec.replicas'",
        ),
        ("kind: App\nname: web\nspec: {replicas: 1, spread: zone}\n", "field 'spec.spread'"),
        ("kind: App\nname: Web_1\nspec: {replicas: 1}\n", "field 'name'"),
        (
            "kind: App\nname: web\nspec: {replicas: 1, colour: red}\n",
            "field 'spec.colour' unknown field",
        ),
        ("kind: Widget\nname: w\nspec: {}\n", "unknown kind 'Widget'; expected one of App, Guest"),
        ("name: w\nspec: {}\n", "field 'kind' is required"),
        ("kind: App\nname: web\n", "field 'spec' is required"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("kind: App\nname: [unclosed\n", "invalid YAML at line 3"),
        ("", "no documents found"),
        ("kind: Host\nname: h\nspec: {}\n", "hosts join with 'podium agent'"),
    ],
)
def test_bad_manifest_messages(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest_text(text, source="f.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("f.yaml")
    assert "\n" not in str(info.value)


def test_second_document_error_names_it() -> None:
    text = GOOD + "---\nkind: Guest\nname: x\nspec: {request: {cpu: 0}}\n"
    with pytest.raises(ManifestError, match=r"document 3: field 'spec.request.cpu'"):
        parse_manifest_text(text, source="f.yaml")


def test_duplicate_names_refused() -> None:
    text = "kind: Guest\nname: a\nspec: {}\n---\nkind: Guest\nname: a\nspec: {}\n"
    with pytest.raises(ManifestError, match="already declared in document 1"):
        parse_manifest_text(text, source="f.yaml")
