"""What a hypervisor driver needs from its host's network: taps on the host switch."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class NetworkError(Exception):
    """A host network operation failed (the message names the interface and the fix)."""


class HostNetwork(Protocol):
    """The host's virtual switch, as seen by a driver that plugs guest NICs into it.

    Every method works in the network namespace the calling process runs in (a lab
    host's namespace, or the real host's), is synchronous, and is idempotent.
    """

    @property
    def bridge(self) -> str:
        """The host switch's interface name (a Linux bridge)."""
        ...

    @property
    def netns(self) -> str | None:
        """The network namespace of the switch and its taps (None: the caller's own);
        tc limits on the taps are set there."""
        ...

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        """Ensure a tap for NIC ``index`` of ``guest`` exists, is up and enslaved to the switch.

        Returns the tap's name (at most 15 characters, derived from guest and index, so
        a restarted agent finds the same tap). ``mac`` is the guest's MAC (the tap itself
        gets a different, local address). ``vlan`` (1..4094): the tap is an untagged
        member of that VLAN only, and the switch's uplinks carry it tagged; None: the
        switch's default (untagged, VLAN 1 where the switch filters VLANs). Called again
        with another ``vlan``, the tap moves to it. Raises :class:`NetworkError` (also
        for a VLAN on a switch that cannot filter VLANs: never a silent untagged tap).
        """
        ...

    def detach(self, tap: str) -> None:
        """Remove a tap; a missing tap is not an error."""
        ...

    def taps(self) -> list[str]:
        """Taps this switch manages (for clean-up and re-adoption)."""
        ...


@runtime_checkable
class ChecksumAware(Protocol):
    """A :class:`HostNetwork` some of whose switches cannot take offloaded checksums."""

    def checksum_offload(self, vlan: int | None) -> bool:
        """Whether a guest NIC on ``vlan`` may leave checksums to the host (False: its
        tap is on a userspace switch that forwards partial checksums unfixed, so the NIC
        needs ``csum=off,guest_csum=off``). Pure: no I/O beyond a probe made once."""
        ...
