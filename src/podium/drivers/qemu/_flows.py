"""The qemu driver's :class:`~podium.drivers.FlowSource`: nftables counters on the host
switch (``podium.drivers.net.BridgeFlows``), named by the MACs of this host's guests."""

from __future__ import annotations

from collections.abc import Iterable

from podium.drivers._flows import Pair, guest_pairs
from podium.drivers._protocol import GuestConfig
from podium.drivers.net import BridgeFlows, NetworkError
from podium.drivers.qemu._argv import layout
from podium.drivers.qemu._errors import QemuError


def guest_macs(configs: Iterable[GuestConfig]) -> dict[str, str]:
    """MAC -> guest name for every NIC of ``configs`` (specs the driver refused are skipped)."""
    macs: dict[str, str] = {}
    for config in configs:
        try:
            nics = layout(config, with_network=True).nics
        except QemuError:
            continue
        macs.update((nic.mac.lower(), config.name) for nic in nics)
    return macs


def measure(flows: BridgeFlows, configs: Iterable[GuestConfig]) -> dict[Pair, int]:
    """Cumulative bytes per endpoint pair with a guest of ``configs`` (blocking: a thread).

    Raises :class:`QemuError` when nft fails (not installed, no permission).
    """
    try:
        by_mac = flows.counters()
    except NetworkError as err:
        raise QemuError(f"traffic accounting: {err}") from err
    return guest_pairs(by_mac, guest_macs(configs))
