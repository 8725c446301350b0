"""Per-MAC-pair byte counters of the frames entering this namespace's Linux bridges.

::

    table bridge podium_flows                      (one per network namespace, ours)
      set flows { ether_addr . ether_addr; dynamic, timeout 10m; counter }
      chain prerouting (hook prerouting): update @flows { ether saddr . ether daddr }
    nft -j list set bridge podium_flows flows ──> {(src MAC, dst MAC): bytes}

Why prerouting: every frame enters the bridge exactly once there, from a tap (a guest
sends) or from the uplink (a remote guest sends), so each direction of a pair is
counted once per host it crosses. (``meta ibrname`` is not supported by the kernel
probed, so every bridge of the namespace is counted: a driver keeps only the pairs of
its own guests.) Bytes are the frames'
network-layer lengths (an IP packet's total length; the 14-byte Ethernet header is
not counted). An idle pair expires after 10 minutes, which bounds the set; ``update``
refreshes it on every frame. ``ensure`` is idempotent and keeps existing counters.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from podium.drivers.net._protocol import NetworkError

TABLE = "podium_flows"
SET = "flows"
NFT = "nft"
IDLE_TIMEOUT = "10m"
MAX_PAIRS = 65536

_RULESET = f"""\
add table bridge {TABLE}
add set bridge {TABLE} {SET} {{ type ether_addr . ether_addr; flags dynamic,timeout; \
timeout {IDLE_TIMEOUT}; size {MAX_PAIRS}; counter; }}
add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -150; \
policy accept; }}
flush chain bridge {TABLE} prerouting
add rule bridge {TABLE} prerouting update @{SET} {{ ether saddr . ether daddr }}
"""

Runner = Callable[[Sequence[str], str | None], str]


def _run(argv: Sequence[str], stdin: str | None) -> str:
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError as err:
        raise NetworkError(
            f"{argv[0]} not found: install nftables (apt-get install nftables) for traffic "
            "accounting"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise NetworkError(f"{' '.join(argv)}: no answer within 10 s") from err
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class BridgeFlows:
    """Byte counters per (source MAC, destination MAC) on this namespace's bridges.

    Synchronous (it runs ``nft``; call it from a thread). ``netns``: the namespace of
    the bridges (``None``: the caller's own). ``runner`` is for tests.
    """

    def __init__(self, *, netns: str | None = None, nft: str = NFT, runner: Runner = _run) -> None:
        self._nft = nft
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._runner = runner
        self._ready = False

    def _call(self, *args: str, stdin: str | None = None) -> str:
        return self._runner([*self._prefix, self._nft, *args], stdin)

    def ensure(self) -> None:
        """Create the table, set and rule if missing; counters already there are kept."""
        self._call("-f", "-", stdin=_RULESET)
        self._ready = True

    def counters(self) -> dict[tuple[str, str], int]:
        """``{(source MAC, destination MAC): bytes}``; sets the accounting up first if
        needed (also when someone deleted the table). Raises :class:`NetworkError`."""
        if not self._ready:
            self.ensure()
        argv = ("-j", "list", "set", "bridge", TABLE, SET)
        try:
            text = self._call(*argv)
        except NetworkError:
            self.ensure()  # deleted behind our back: counting starts over (a reset)
            text = self._call(*argv)
        return parse_set(text)

    def remove(self) -> None:
        """Delete the table (its counters go with it). A missing table is fine."""
        try:
            self._call("delete", "table", "bridge", TABLE)
        except NetworkError as err:
            if "No such file" not in str(err):
                raise
        self._ready = False


def parse_set(text: str) -> dict[tuple[str, str], int]:
    """The elements of ``nft -j list set`` output as ``{(src, dst): bytes}``.

    Raises :class:`NetworkError` if the output is not the JSON nft writes.
    """
    try:
        doc: Any = json.loads(text)
        out: dict[tuple[str, str], int] = {}
        for item in doc.get("nftables", []):
            for element in item.get("set", {}).get("elem", []):
                elem = element.get("elem", element)
                src, dst = elem["val"]["concat"]
                count = int(elem.get("counter", {}).get("bytes", 0))
                key = (str(src).lower(), str(dst).lower())
                out[key] = out.get(key, 0) + count
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise NetworkError(f"unexpected output of nft -j list set: {err!r}") from err
