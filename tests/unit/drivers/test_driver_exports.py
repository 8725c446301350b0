"""The public surface of podium.drivers is what we mean it to be."""

from pathlib import Path

import podium.drivers
from podium.model import Resources


def test_exports() -> None:
    assert sorted(podium.drivers.__all__) == [
        "BackupError",
        "BackupRequest",
        "BackupResult",
        "BlockBackup",
        "ConsoleSource",
        "DRIVERS",
        "Driver",
        "DriverError",
        "DriverFactory",
        "DriverGuestState",
        "FlowSource",
        "GuestBusy",
        "GuestConfig",
        "GuestInfo",
        "GuestKilled",
        "GuestNotFound",
        "GuestQos",
        "InsufficientResources",
        "LiveMigration",
        "MigrationError",
        "MigrationProgress",
        "MigrationResult",
        "SimDriver",
        "SimTraffic",
        "SimUsage",
        "Usage",
        "UsageSource",
        "as_usage",
    ]
    assert sorted(podium.drivers.DRIVERS) == ["qemu", "sim"]
    for error in (podium.drivers.MigrationError, podium.drivers.BackupError):
        assert issubclass(error, podium.drivers.DriverError)
    assert podium.drivers.DriverGuestState.INCOMING.active


def test_qemu_exports() -> None:
    import podium.drivers.qemu  # noqa: PLC0415

    assert sorted(podium.drivers.qemu.__all__) == [
        "ACCEL_ENV",
        "BRIDGE_ENV",
        "CACHE_ENV",
        "DEFAULT_DATA_DIR",
        "DEFAULT_OVS_BRIDGE",
        "DISK_PREFIX",
        "Image",
        "ImageError",
        "MIN_MEMORY_MIB",
        "OVS_BRIDGE_ENV",
        "OVS_DB_ENV",
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
        "observe_status",
        "qemu_driver",
    ]
    assert podium.drivers.DRIVERS["qemu"] is podium.drivers.qemu.qemu_driver
    assert issubclass(podium.drivers.qemu.QemuError, podium.drivers.DriverError)


def test_which_optional_protocols_each_driver_offers(tmp_path: Path) -> None:
    from podium.drivers import BlockBackup, ConsoleSource, LiveMigration  # noqa: PLC0415

    capacity = Resources(cpu=1, memory_mib=512)
    qemu = podium.drivers.DRIVERS["qemu"](name="h1", capacity=capacity, data_dir=tmp_path)
    sim = podium.drivers.DRIVERS["sim"](name="h1", capacity=capacity, data_dir=tmp_path)
    assert all(isinstance(qemu, p) for p in (LiveMigration, BlockBackup, ConsoleSource))
    assert isinstance(sim, LiveMigration) and not isinstance(sim, BlockBackup)


def test_the_qemu_factory_keeps_backups_beside_volumes_in_the_data_dir(tmp_path: Path) -> None:
    import podium.drivers.qemu  # noqa: PLC0415

    capacity = Resources(cpu=1, memory_mib=512)
    driver = podium.drivers.DRIVERS["qemu"](name="h1", capacity=capacity, data_dir=tmp_path)
    assert isinstance(driver, podium.drivers.qemu.QemuDriver)
    assert (driver.state_dir, driver.volumes_dir, driver.backups_dir) == (
        tmp_path / "h1",
        tmp_path / "volumes",
        tmp_path / "backups",
    )
