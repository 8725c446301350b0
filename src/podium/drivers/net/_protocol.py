"""What a hypervisor driver needs from its host's network: taps on the host switch."""

from __future__ import annotations

from typing import Protocol


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

    def attach(self, guest: str, index: int, mac: str) -> str:
        """Ensure a tap for NIC ``index`` of ``guest`` exists, is up and enslaved to the switch.

        Returns the tap's name (at most 15 characters, derived from guest and index, so
        a restarted agent finds the same tap). ``mac`` is the guest's MAC (the tap itself
        gets a different, local address). Raises :class:`NetworkError`.
        """
        ...

    def detach(self, tap: str) -> None:
        """Remove a tap; a missing tap is not an error."""
        ...

    def taps(self) -> list[str]:
        """Taps this switch manages (for clean-up and re-adoption)."""
        ...
