"""TLS material in the data dir: an EC P-256 CA and a server certificate it signs.

::

    data-dir/ca.pem, ca.key          made once; clients trust ca.pem (it is in admin.conf)
    data-dir/server.pem, server.key  re-issued by the same CA when a needed name is missing
                                     or it nears expiry; otherwise reused as is

Key files are written 0600, atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_pem: str
    cert: Path
    key: Path


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically with ``mode`` (the temp file has it from creation)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.chmod(mode)  # in case the umask took bits away
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def wanted_names(listen_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Names the server certificate must carry (contracts.md: Server process)."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]
    if listen_host not in ("0.0.0.0", "::", ""):
        names.append(listen_host)
    return list(dict.fromkeys(n for n in names if n))


def _load_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((data_dir / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((data_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return cert, key


def _new_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podium"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"podium CA ({socket.gethostname()})"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_file(data_dir / "ca.key", _key_pem(key), 0o600)
    write_file(data_dir / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _server_cert_ok(data_dir: Path, ca: x509.Certificate, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((data_dir / "server.pem").read_bytes())
        key = serialization.load_pem_private_key((data_dir / "server.key").read_bytes(), None)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if key.public_key() != cert.public_key():
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    return all(_san(n) in sans for n in names)


def _new_server_cert(
    data_dir: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_file(data_dir / "server.key", _key_pem(key), 0o600)
    write_file(data_dir / "server.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_tls(data_dir: Path, names: list[str]) -> TlsFiles:
    """Load or make the CA and a server certificate for ``names`` in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    loaded = _load_ca(data_dir)
    ca, ca_key = loaded if loaded is not None else _new_ca(data_dir)
    if loaded is None or not _server_cert_ok(data_dir, ca, names):
        _new_server_cert(data_dir, ca, ca_key, names)
    return TlsFiles(
        ca_pem=(data_dir / "ca.pem").read_text(),
        cert=data_dir / "server.pem",
        key=data_dir / "server.key",
    )
