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
    assert sorted(podium.drivers.DRIVERS) == ["qemu", "sim"]


def test_qemu_exports() -> None:
    import podium.drivers.qemu  # noqa: PLC0415

    assert sorted(podium.drivers.qemu.__all__) == [
        "ACCEL_ENV",
        "BRIDGE_ENV",
        "CACHE_ENV",
        "DEFAULT_DATA_DIR",
        "Image",
        "ImageError",
        "MIN_MEMORY_MIB",
        "QemuDriver",
        "QemuError",
        "QemuStartError",
        "QmpError",
        "READY_PREFIX",
        "build_image",
        "choose_accel",
        "default_cache_dir",
        "derived_mac",
        "guest_uuid",
        "kvm_works",
        "qemu_driver",
    ]
    assert podium.drivers.DRIVERS["qemu"] is podium.drivers.qemu.qemu_driver
    assert issubclass(podium.drivers.qemu.QemuError, podium.drivers.DriverError)
