"""The image cache: keyed by inputs, reused, rebuilt on change, atomic (no real packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.drivers.qemu import ImageError, _image
from podium.drivers.qemu._image import build_image, image_key, resolve_kernel


class FakeBuild:
    """Stands in for apt, dpkg and busybox: counts builds, can fail one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.version = "6.1.192-2"
        self.builds = 0
        self.fail = False
        monkeypatch.setattr(_image, "resolve_kernel", lambda meta: ("linux-image-x", self.version))
        monkeypatch.setattr(_image, "busybox_version", lambda path=None: "BusyBox v1.35.0")
        monkeypatch.setattr(_image, "_download", lambda debs, package, version: debs / "k.deb")
        monkeypatch.setattr(_image, "_assemble", self.assemble)

    def assemble(self, work: Path, **kw: str) -> None:
        self.builds += 1
        (work / "vmlinuz").write_bytes(b"kernel")
        if self.fail:
            raise ImageError("dpkg -x failed")
        (work / "initrd.gz").write_bytes(b"initrd")
        meta = (
            f'{{"key": "{kw["key"]}", "kernel_package": "{kw["package"]}", '
            f'"kernel_version": "{kw["version"]}", "modules": ["virtio"]}}'
        )
        (work / "image.json").write_text(meta)


def test_built_once_then_reused_then_rebuilt_when_an_input_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBuild(monkeypatch)
    first = build_image(tmp_path)
    assert not first.cached and fake.builds == 1
    assert first.path == tmp_path / first.key and first.kernel.read_bytes() == b"kernel"
    again = build_image(tmp_path)
    assert again.cached and again.path == first.path and fake.builds == 1
    fake.version = "6.1.200-1"  # a new kernel package
    newer = build_image(tmp_path)
    assert not newer.cached and newer.key != first.key and fake.builds == 2


def test_a_failed_build_leaves_no_partial_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBuild(monkeypatch)
    fake.fail = True
    with pytest.raises(ImageError, match="dpkg -x failed"):
        build_image(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []
    fake.fail = False
    assert not build_image(tmp_path).cached


def test_the_key_covers_every_input() -> None:
    base = image_key("linux-image-a", "1", "BusyBox v1")
    assert base == image_key("linux-image-a", "1", "BusyBox v1")
    assert base != image_key("linux-image-b", "1", "BusyBox v1")
    assert base != image_key("linux-image-a", "2", "BusyBox v1")
    assert base != image_key("linux-image-a", "1", "BusyBox v2")


def test_the_kernel_package_and_version_come_from_the_meta_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> str:
        calls.append(argv)
        return (
            "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n"
            "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n"
            "Description: Linux for x86-64 cloud\n more text: here\n"
        )

    monkeypatch.setattr(_image, "_run", run)
    assert resolve_kernel() == ("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")
    assert calls == [["apt-cache", "show", "--no-all-versions", "linux-image-cloud-amd64"]]
