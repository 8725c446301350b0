"""ClientConfig: resolution order, one-line errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.client import ClientConfig, ClientError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(path: Path, server: str = "https://127.0.0.1:7443", token: str = "pdm_admin_x") -> Path:
    config = ClientConfig(server=server, ca_pem=PEM, token=token)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_yaml())
    return path


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "admin.conf")
    loaded = ClientConfig.load(str(path))
    assert loaded == ClientConfig("https://127.0.0.1:7443", PEM, "pdm_admin_x", str(path))
    assert loaded.source == str(path)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "explicit.conf", token="explicit")
    from_env = write(tmp_path / "env.conf", token="env")
    home = tmp_path / "home"
    write(home / ".config" / "podium" / "config", token="home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PODIUM_CONFIG", str(from_env))
    assert ClientConfig.load(str(explicit)).token == "explicit"
    assert ClientConfig.load(None).token == "env"
    monkeypatch.delenv("PODIUM_CONFIG")
    assert ClientConfig.load(None).token == "home"


def test_missing_config_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PODIUM_CONFIG", raising=False)
    with pytest.raises(ClientError) as default:
        ClientConfig.load(None)
    assert str(default.value).startswith("no client config: pass --config FILE, set PODIUM_CONFIG")
    assert "'podium server'" in str(default.value)
    with pytest.raises(ClientError, match=r"no client config at .*nope\.conf: pass --config"):
        ClientConfig.load(str(tmp_path / "nope.conf"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
        ("server: https://x\n", "field 'token' is required"),
        ("token: t\n", "field 'server' is required"),
        ("server: ftp://x\ntoken: t\n", "must be an https:// URL"),
        ("server: https://x\ntoken: t\nca: 5\n", "field 'ca' must be PEM text"),
    ],
)
def test_malformed_configs_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(ClientError, match=fragment) as err:
        ClientConfig.load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
