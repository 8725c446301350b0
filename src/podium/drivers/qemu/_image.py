"""Build (or reuse) the tiny guest image from Debian packages only.

::

    apt-cache show linux-image-cloud-amd64 ──> linux-image-<abi>-cloud-amd64 + version
    apt-get download ──> dpkg -x ──> vmlinuz + virtio modules (depends= order)
    /bin/busybox (busybox-static) + /init ──> initrd.gz (cpio newc, gzip)
    cache_dir/<key>/{vmlinuz, initrd.gz, image.json}     key = hash of every input

Nothing is installed system-wide. The build happens in a temporary folder beside the
cache and is renamed into place, so a reader never sees half an image and two builds
racing each other both end with the same complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from podium.drivers.qemu._errors import ImageError
from podium.drivers.qemu._initramfs import (
    INIT_SCRIPT,
    MODULE_ROOTS,
    POWEROFF_SCRIPT,
    initramfs,
    load_order,
    module_depends,
    module_index,
)

FORMAT = 1  # bump when the layout of an image folder changes
META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")  # from busybox-static
DEFAULT_CACHE_DIR = Path("/var/cache/podium/images")
CACHE_ENV = "PODIUM_IMAGE_CACHE"


@dataclass(frozen=True, slots=True)
class Image:
    """A built guest image: what QEMU's ``-kernel`` and ``-initrd`` take."""

    path: Path  # the image folder, cache_dir/<key>
    key: str  # hash of the inputs
    kernel_package: str  # e.g. linux-image-6.1.0-56-cloud-amd64
    kernel_version: str  # the package version, e.g. 6.1.192-2
    modules: tuple[str, ...]  # load order
    cached: bool  # found in the cache rather than built by this call

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.gz"


def default_cache_dir() -> Path:
    """``$PODIUM_IMAGE_CACHE``, else ``/var/cache/podium/images``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _run(argv: list[str], *, hint: str, cwd: Path | None = None) -> str:
    """Run a tool; its stdout, or :class:`ImageError` naming the command and ``hint``."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
        )
    except FileNotFoundError as err:
        raise ImageError(f"{argv[0]} is not installed; {hint}") from err
    except subprocess.TimeoutExpired as err:
        raise ImageError(f"{' '.join(argv)} took over 10 minutes; {hint}") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ImageError(f"{' '.join(argv)} failed: {' / '.join(tail)}; {hint}")
    return done.stdout


def _show(package: str) -> dict[str, str]:
    out = _run(["apt-cache", "show", "--no-all-versions", package], hint="run 'apt-get update'")
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields.setdefault(key, value.strip())
    return fields


def resolve_kernel(meta: str = META_PACKAGE) -> tuple[str, str]:
    """The kernel package ``meta`` depends on now (``linux-image-<abi>-cloud-amd64``) and
    its version.

    One ``apt-cache show`` of ``meta`` names both, like ``apt-cache depends`` would
    (``Depends: pkg (= version)``; every apt call costs a second here). Runs
    ``apt-get update`` once if the package lists do not know ``meta``.
    """
    try:
        fields = _show(meta)
    except ImageError:
        _run(["apt-get", "update"], hint="check the network and /etc/apt/sources.list")
        fields = _show(meta)
    for dep in fields.get("Depends", "").split(","):
        package, _, constraint = dep.strip().partition(" ")
        if package.startswith("linux-image-"):
            if constraint.startswith("(= "):
                version = constraint.removeprefix("(= ").rstrip(")").strip()
            else:
                version = _show(package).get("Version", "")
            if not version:
                raise ImageError(f"apt-cache shows no version of {package}")
            return package, version
    raise ImageError(f"apt-cache names no linux-image-* package that {meta} depends on")


def busybox_version(busybox: Path = BUSYBOX) -> str:
    """The first line busybox prints, e.g. ``BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)``."""
    if not busybox.exists():
        raise ImageError(f"{busybox} is missing: apt-get install busybox-static")
    banner = _run([str(busybox)], hint="apt-get install busybox-static").splitlines()
    return banner[0].split(" multi-call", 1)[0].strip() if banner else "unknown"


def image_key(kernel_package: str, kernel_version: str, busybox: str) -> str:
    """Hash of every input of an image: same inputs, same key, same folder."""
    inputs = {
        "format": FORMAT,
        "kernel": [kernel_package, kernel_version],
        "busybox": busybox,
        "init": INIT_SCRIPT,
        "poweroff": POWEROFF_SCRIPT,
        "modules": list(MODULE_ROOTS),
    }
    blob = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load(folder: Path) -> Image | None:
    try:
        meta = json.loads((folder / "image.json").read_text())
    except (OSError, ValueError):
        return None
    image = Image(
        folder,
        meta["key"],
        meta["kernel_package"],
        meta["kernel_version"],
        tuple(meta["modules"]),
        cached=True,
    )
    return image if image.kernel.exists() and image.initrd.exists() else None


def _download(debs: Path, package: str, version: str) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = sorted(debs.glob(pattern))
    if not found:
        _run(
            ["apt-get", "download", f"{package}={version}"],
            cwd=debs,
            hint="check the network and the apt sources",
        )
        found = sorted(debs.glob(pattern))
    if not found:
        raise ImageError(f"apt-get download left no {pattern} in {debs}")
    return found[-1]


def _modules_dir(root: Path) -> Path:
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        versions = sorted(base.glob("*")) if base.is_dir() else []
        if versions:
            return versions[-1]
    raise ImageError(f"the kernel package unpacked in {root} has no lib/modules folder")


def _assemble(
    work: Path, *, deb: Path, busybox: Path, key: str, package: str, version: str
) -> None:
    """Unpack the kernel package in ``work/root`` and write the image files into ``work``."""
    root = work / "root"
    _run(["dpkg", "-x", str(deb), str(root)], hint="is this a Debian system with dpkg?")
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError(f"{deb.name} holds no boot/vmlinuz-*")
    index = module_index(_modules_dir(root))
    blobs = {name: path.read_bytes() for name, path in index.items()}
    order = load_order(MODULE_ROOTS, {name: module_depends(b) for name, b in blobs.items()})
    (work / "initrd.gz").write_bytes(initramfs(busybox.read_bytes(), blobs, order))
    shutil.copyfile(kernels[-1], work / "vmlinuz")
    shutil.rmtree(root)
    meta = {
        "key": key,
        "kernel_package": package,
        "kernel_version": version,
        "busybox": busybox_version(busybox),
        "modules": order,
        "format": FORMAT,
    }
    (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n")


def build_image(
    cache_dir: Path | None = None,
    *,
    meta_package: str = META_PACKAGE,
    busybox: Path = BUSYBOX,
) -> Image:
    """The tiny guest image for the current inputs: from ``cache_dir/<key>`` or built there.

    ``cache_dir`` defaults to :func:`default_cache_dir`. Builds only when no complete
    image has the inputs' key; keeps downloaded packages in ``cache_dir/debs``. Safe
    to call from several processes at once. Raises :class:`ImageError` (which says what
    to install or fix); a failed build leaves nothing but the downloaded package.
    """
    cache = cache_dir or default_cache_dir()
    package, version = resolve_kernel(meta_package)
    key = image_key(package, version, busybox_version(busybox))
    final = cache / key
    found = _load(final)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    deb = _download(cache / "debs", package, version)
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
    try:
        _assemble(work, deb=deb, busybox=busybox, key=key, package=package, version=version)
        work.chmod(0o755)
        try:
            work.rename(final)
        except OSError:  # another build won the race; it is complete (renamed whole)
            if _load(final) is None:
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    built = _load(final)
    if built is None:
        raise ImageError(f"the image in {final} is incomplete; remove the folder and retry")
    return Image(
        built.path,
        built.key,
        built.kernel_package,
        built.kernel_version,
        built.modules,
        cached=False,
    )
