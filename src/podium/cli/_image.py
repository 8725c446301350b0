"""podium image ...: the tiny guest image the qemu driver boots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from podium.cli._common import console, fail

image_app = typer.Typer(help="The guest image the qemu driver boots.", no_args_is_help=True)


@image_app.command("build")
def build(
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Image cache (default: $PODIUM_IMAGE_CACHE, then /var/cache/podium/images)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Build the tiny guest (Debian cloud kernel + busybox initramfs), or reuse the cached one.

    Rebuilds only when an input changed: the kernel package version, busybox, the init
    script or the module list.
    """
    from podium.drivers.qemu import ImageError, build_image, default_cache_dir  # noqa: PLC0415

    started = time.monotonic()
    try:
        image = build_image(cache_dir or default_cache_dir())
    except ImageError as err:
        fail(str(err))
    took = time.monotonic() - started
    if as_json:
        print(
            json.dumps(
                {
                    "path": str(image.path),
                    "kernel": str(image.kernel),
                    "initrd": str(image.initrd),
                    "key": image.key,
                    "kernel_package": f"{image.kernel_package} {image.kernel_version}",
                    "cached": image.cached,
                    "seconds": round(took, 2),
                }
            )
        )
        return
    how = "cached" if image.cached else f"built in {took:.1f} s"
    console.print(f"{image.path} ({how})", highlight=False)
    kernel = f"{image.kernel_package} {image.kernel_version}"
    modules = ", ".join(image.modules)
    console.print(f"kernel {kernel}, modules: {modules}", highlight=False, soft_wrap=True)
