"""A real `podium server` process: TLS with its own CA, private files, reuse on restart."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.server._tls import ensure_tls
from tests.support.server import running_server, sqlite_url

SECRETS = ("admin.conf", "ca.key", "server.key")
MATERIAL = ("ca.pem", "ca.key", "server.pem", "server.key")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_tls_verifies_with_the_generated_ca_and_fails_without_it(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as (url, config_path, _):
        assert url.startswith("https://127.0.0.1:")
        config = ClientConfig.load(str(config_path))
        assert config.server == url and config.ca_pem and config.token.startswith("pdm_admin_")
        async with AsyncPodiumClient(config) as client:
            assert (await client.health())["ok"] is True

        system_trust = ClientConfig(url, None, config.token, path="no-ca.conf")
        async with AsyncPodiumClient(system_trust) as client:
            with pytest.raises(ClientError) as err:
                await client.health()
        assert "TLS handshake with" in str(err.value)
        assert "not trusted by the CA in no-ca.conf" in str(err.value)
        assert err.value.status is None

        other = ensure_tls(tmp_path / "other", ["localhost", "127.0.0.1"])
        wrong_ca = ClientConfig(url, other.ca_pem, config.token, path="other.conf")
        async with AsyncPodiumClient(wrong_ca) as client:
            with pytest.raises(ClientError, match=r"not trusted by the CA in other\.conf"):
                await client.health()

        plain = url.replace("https://", "http://")
        async with httpx.AsyncClient() as raw:
            with pytest.raises(httpx.HTTPError):
                await raw.get(f"{plain}/healthz")


async def test_material_is_private_and_reused_on_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as (url, config_path, _):
        first_token = ClientConfig.load(str(config_path)).token
        material = {name: (data / name).read_bytes() for name in MATERIAL}
        for name in SECRETS:
            assert mode(data / name) == 0o600, name
        cert = x509.load_pem_x509_certificate(material["server.pem"])
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(n.value) for n in sans}
        assert {"localhost", "127.0.0.1", "::1", socket.gethostname()} <= names
        first_url = url

    with running_server(data) as (url, config_path, _):
        assert {name: (data / name).read_bytes() for name in MATERIAL} == material
        config = ClientConfig.load(str(config_path))
        assert config.token == first_token
        assert config.server == url  # the new port (listen :0)
        assert mode(config_path) == 0o600
        async with AsyncPodiumClient(config) as client:
            assert (await client.health())["ok"] is True
    assert first_url.startswith("https://127.0.0.1:")


async def test_a_new_store_gets_a_new_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, store_url=sqlite_url(tmp_path / "one")) as (_, config_path, _):
        old = ClientConfig.load(str(config_path))
    (tmp_path / "two").mkdir()
    with running_server(data, store_url=sqlite_url(tmp_path / "two")) as (url, config_path, _):
        new = ClientConfig.load(str(config_path))
        assert new.token != old.token and new.ca_pem == old.ca_pem
        async with AsyncPodiumClient(ClientConfig(url, old.ca_pem, old.token)) as client:
            with pytest.raises(ClientError) as err:
                await client.health()
        assert err.value.status == 401
        async with AsyncPodiumClient(new) as client:
            assert (await client.health())["ok"] is True
