"""The admin token and ``<data-dir>/admin.conf`` (the admin's client config).

The token is stored hashed in the store; its plaintext lives only in admin.conf
(mode 0600). On restart the token from admin.conf is reused if the store still
knows it as an admin token; otherwise (a new store) a new one is minted.
"""

from __future__ import annotations

from pathlib import Path

from podium.client import ClientConfig, ClientError
from podium.server._tls import write_file
from podium.state import ClusterState


def _read_token(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return ClientConfig.load(str(path)).token
    except ClientError:
        return None  # unreadable: replace it


async def ensure_admin_config(
    state: ClusterState, path: Path, server_url: str, ca_pem: str | None
) -> ClientConfig:
    """Write admin.conf for ``server_url``, reusing its token if the store knows it."""
    token = _read_token(path)
    if token is not None:
        record = await state.lookup_token(token)
        if record is None or record.get("role") != "admin":
            token = None
    if token is None:
        token = await state.create_token("admin")
        await state.emit("Token", "admin", "AdminTokenCreated", f"admin token written to {path}")
    config = ClientConfig(server=server_url, ca_pem=ca_pem, token=token, path=str(path))
    write_file(path, config.to_yaml().encode(), 0o600)
    return config
