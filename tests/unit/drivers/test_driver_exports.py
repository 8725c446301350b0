"""The public surface of podium.drivers is what we mean it to be."""

import podium.drivers


def test_exports() -> None:
    assert sorted(podium.drivers.__all__) == [
        "DRIVERS",
        "Driver",
        "DriverError",
        "DriverFactory",
        "DriverGuestState",
        "GuestBusy",
        "GuestConfig",
        "GuestInfo",
        "GuestKilled",
        "GuestNotFound",
        "InsufficientResources",
        "SimDriver",
    ]
    assert sorted(podium.drivers.DRIVERS) == ["sim"]
