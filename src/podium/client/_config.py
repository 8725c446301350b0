"""Client configuration: where the server is, which CA to trust, which token to send."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podium.client._errors import ClientError

ENV_VAR = "PODIUM_CONFIG"
DEFAULT_PATH = "~/.config/podium/config"
HOW_TO = (
    "pass --config FILE, set PODIUM_CONFIG, or run 'podium server' and use the "
    "<data-dir>/admin.conf it writes"
)
URL_SCHEMES = ("https://", "http://")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A server URL, the CA certificate (PEM) to verify it with, and a bearer token.

    ``path`` is where the config was read from (named in error messages), if anywhere.
    ``fallbacks`` are further servers of the same cluster (same CA, same token), tried
    in order when ``server`` does not answer.
    """

    server: str
    ca_pem: str | None
    token: str
    path: str | None = None
    fallbacks: tuple[str, ...] = ()

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server to try, in order: ``server``, then the ``fallbacks``."""
        return (self.server, *self.fallbacks)

    @property
    def source(self) -> str:
        """How error messages name this config."""
        return self.path or "the client config"

    @classmethod
    def load(cls, path: str | None = None) -> ClientConfig:
        """Read a config (YAML: ``server``, ``ca``, ``token``, optional ``servers``).

        Resolution: ``path`` → ``$PODIUM_CONFIG`` → ``~/.config/podium/config``.
        Raises :class:`ClientError` if there is none or it is malformed.
        """
        explicit = path or os.environ.get(ENV_VAR) or None
        where = Path(explicit or DEFAULT_PATH).expanduser()
        try:
            text = where.read_text()
        except FileNotFoundError:
            looked = f"no client config at {where}" if explicit else "no client config"
            raise ClientError(f"{looked}: {HOW_TO}") from None
        except OSError as err:
            raise ClientError(f"cannot read client config {where}: {err.strerror}") from err
        return cls.parse(text, source=str(where))

    @classmethod
    def parse(cls, text: str, *, source: str = "<config>") -> ClientConfig:
        """Parse config YAML. Raises :class:`ClientError` naming ``source`` and the field.

        ``servers`` (optional) lists further URLs of the same cluster, tried after
        ``server``; repeats of an earlier URL are dropped.
        """
        try:
            data: Any = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ClientError(
                f"client config {source} is not valid YAML{where}: {problem}"
            ) from err
        if not isinstance(data, dict):
            raise ClientError(f"client config {source}: expected a mapping with server, ca, token")
        for field in ("server", "token"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise ClientError(f"client config {source}: field '{field}' is required (a string)")
        server: str = data["server"].rstrip("/")
        if not server.startswith(URL_SCHEMES):
            raise ClientError(
                f"client config {source}: field 'server' must be an https:// URL, got {server!r}"
            )
        fallbacks = _fallbacks(data.get("servers"), server, source)
        ca = data.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise ClientError(f"client config {source}: field 'ca' must be PEM text")
        return cls(
            server=server, ca_pem=ca or None, token=data["token"], path=source, fallbacks=fallbacks
        )

    def to_yaml(self) -> str:
        """The config as YAML (what ``podium server`` writes to admin.conf)."""
        data: dict[str, Any] = {"server": self.server}
        if self.fallbacks:
            data["servers"] = list(self.fallbacks)
        data |= {"ca": self.ca_pem, "token": self.token}
        return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def _fallbacks(value: Any, server: str, source: str) -> tuple[str, ...]:
    """The ``servers`` list of a config: URLs tried after ``server``, in order."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ClientError(
            f"client config {source}: field 'servers' must be a list of https:// URLs"
        )
    seen = [server]
    for number, entry in enumerate(value, 1):
        url = entry.rstrip("/") if isinstance(entry, str) else entry
        if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
            raise ClientError(
                f"client config {source}: entry {number} of field 'servers' must be an "
                f"https:// URL, got {entry!r}"
            )
        if url not in seen:
            seen.append(url)
    return tuple(seen[1:])
