"""What differs per architecture when building a kernel: one class per arch, as virtme-ng does."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class KernelArch:
    name: str              # the harness's name (x86_64, arm64)
    kbuild_arch: str       # ARCH= for make
    cross_prefix: str      # CROSS_COMPILE= when not building natively
    image_target: str      # make target for the boot image
    image_path: str        # where make leaves it, relative to the build dir
    fragment: str          # kernel/configs/<fragment>.config
    host_machines: tuple[str, ...]  # `uname -m` values that build it natively

    @property
    def native(self) -> bool:
        return platform.machine() in self.host_machines

    @property
    def compile_prefix(self) -> str:
        return "" if self.native else self.cross_prefix

    @property
    def image_name(self) -> str:
        return self.image_path.rsplit("/", 1)[-1]

    def compiler(self) -> str:
        cc = f"{self.compile_prefix}gcc"
        if shutil.which(cc) is None:
            hint = "gcc-aarch64-linux-gnu" if self.name == "arm64" else "build-essential"
            raise HarnessError(f"{cc} not found: install {hint} (bash scripts/setup.sh)")
        return cc


X86_64 = KernelArch("x86_64", "x86_64", "x86_64-linux-gnu-", "bzImage", "arch/x86/boot/bzImage",
                    "x86_64", ("x86_64", "amd64"))
ARM64 = KernelArch("arm64", "arm64", "aarch64-linux-gnu-", "Image", "arch/arm64/boot/Image",
                   "arm64", ("aarch64", "arm64"))

ARCHES = {a.name: a for a in (X86_64, ARM64)}


def get(name: str) -> KernelArch:
    try:
        return ARCHES[name]
    except KeyError:
        raise HarnessError(f"unknown arch {name!r} (one of: {', '.join(ARCHES)})") from None
