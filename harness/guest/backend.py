"""Where a cell's guest runs: the interface the runner drives, and the virtme-ng implementation.

A backend prepares what a guest needs besides the kernel (the accelerator, the root filesystem,
the workload binary, a scratch disk) and runs the guest script in a guest whose share is a host
directory. The runner knows nothing else about guests, so a fake backend that replays recorded
guest outputs (harness/guest/fake.py) tests everything around a boot in seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from rich.console import Console

from harness.guest import accel as accelmod
from harness.guest.accel import AccelChoice
from harness.guest.rootfs import ensure_rootfs
from harness.guest.scratch import scratch_disk
from harness.guest.vm import GuestConfig, GuestResult, run_guest
from harness.kernel.cache import BuildCache
from harness.workload.build import workload_dir


class GuestBackend(Protocol):
    name: str

    def host_facts(self, arch: str) -> dict[str, str]: ...

    def accel(self, requested: str, arch: str, image: Path) -> AccelChoice: ...

    def rootfs(self, arch: str) -> Path | None: ...

    def tools(self, arch: str) -> Path: ...

    def scratch(self, size_mb: int) -> contextlib.AbstractContextManager[Path]: ...

    def run(self, cfg: GuestConfig, share_dir: Path, command: str, timeout_s: float, console: Path,
            boot_timeout_s: float | None) -> GuestResult: ...


class VngBackend:
    """QEMU through virtme-ng on this host (KVM when a probe boot works, else TCG)."""

    name = "vng"

    def __init__(self, cache: BuildCache, console: Console | None = None):
        self.cache = cache
        self.console = console   # where a rootfs build shows its progress (default: stderr)

    def host_facts(self, arch: str) -> dict[str, str]:
        return accelmod.host_facts(arch)

    def accel(self, requested: str, arch: str, image: Path) -> AccelChoice:
        return accelmod.resolve(requested, arch, image, self.cache)

    def rootfs(self, arch: str) -> Path | None:
        return ensure_rootfs(self.cache, arch, console=self.console) if arch == "arm64" else None

    def tools(self, arch: str) -> Path:
        return workload_dir(self.cache, arch)

    @contextlib.contextmanager
    def scratch(self, size_mb: int) -> Iterator[Path]:
        with scratch_disk(self.cache.root / "tmp", size_mb) as image:
            yield image

    def run(self, cfg: GuestConfig, share_dir: Path, command: str, timeout_s: float, console: Path,
            boot_timeout_s: float | None) -> GuestResult:
        return run_guest(cfg, share_dir, command, timeout_s, console, boot_timeout_s)
