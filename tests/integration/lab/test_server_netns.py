"""`podium server --listen-netns NETNS@HOST:PORT`: a second socket, bound inside a namespace."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from podium.drivers.net import create_namespace, delete_namespace, ensure_address, ensure_bridge
from tests.integration.lab.conftest import LeakGuard, netns_run
from tests.support.server import running_server, start_server, stop_server

PODIUM_SERVER = (sys.executable, "-m", "podium", "server")


def test_the_cli_server_listens_inside_a_namespace_too(guard: LeakGuard, tmp_path: Path) -> None:
    ns = f"{guard.prefix}fab"
    create_namespace(ns)
    try:
        ensure_bridge(ns, "fab0")
        ensure_address(ns, "fab0", "10.213.0.1/16")
        server = start_server(
            tmp_path, command=PODIUM_SERVER, args=["--listen-netns", f"{ns}@10.213.0.1:7443"]
        )
        try:
            inside = netns_run(ns, "ss", "-Hltnp").stdout
            assert "10.213.0.1:7443" in inside and f"pid={server.proc.pid}," in inside
            outside = subprocess.run(
                ["ss", "-Hltnp"], capture_output=True, text=True, check=True
            ).stdout
            mine = [line for line in outside.splitlines() if f"pid={server.proc.pid}," in line]
            assert len(mine) == 1 and "127.0.0.1:" in mine[0]
            cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert ipaddress.ip_address("10.213.0.1") in sans.get_values_for_type(x509.IPAddress)
        finally:
            stop_server(server)
    finally:
        delete_namespace(ns)


def test_a_missing_namespace_stops_the_server_with_one_line(
    guard: LeakGuard, tmp_path: Path
) -> None:  # fmt: skip
    out = subprocess.run(
        [*PODIUM_SERVER, "--store", f"sqlite:///{tmp_path}/podium.db", "--data-dir",
         str(tmp_path), "--listen", "127.0.0.1:0",
         "--listen-netns", f"{guard.prefix}nope@10.213.0.1:7443"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert f"{guard.prefix}nope" in out.stderr and "does not exist" in out.stderr


def test_an_address_missing_in_the_namespace_is_named(guard: LeakGuard, tmp_path: Path) -> None:
    ns = f"{guard.prefix}fab"
    create_namespace(ns)
    try:
        try:
            with running_server(tmp_path, args=["--listen-netns", f"{ns}@10.213.0.9:7443"]):
                raise AssertionError("the server started without its namespace address")
        except RuntimeError as err:
            assert f"cannot listen on {ns}@10.213.0.9:7443" in str(err)
    finally:
        delete_namespace(ns)
