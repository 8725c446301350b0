"""Host networking: the per-host virtual switch, guest taps, and the fabric between hosts.

::

    guest NIC ── tap ── host switch (Linux bridge, in the host's netns) ── uplink ── fabric
    (same host: frames stay in the host switch; other hosts: across the fabric)
"""

from podium.drivers.net._protocol import HostNetwork, NetworkError

__all__ = ["HostNetwork", "NetworkError"]
