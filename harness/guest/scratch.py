"""A block-backed scratch filesystem for the workload's file phases.

The guest's /tmp is tmpfs: its pages are never read from a device, so a page-cache probe sees no
misses and dropping the cache does nothing. An ext4 image on a virtio-blk disk gives the phases a
real read path (page cache -> block layer -> virtio). The image is sparse and lives in the cache's
temporary directory for one guest run only: nothing large lands in results or git."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness import procs
from harness.errors import HarnessError

MOUNT = "/tmp/scratch"   # where the guest mounts it; the workload's --workdir


@contextlib.contextmanager
def scratch_disk(tmp_root: Path, size_mb: int) -> Iterator[Path]:
    """A freshly formatted ext4 image of size_mb, removed afterwards."""
    mkfs = shutil.which("mkfs.ext4") or next((p for p in ("/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4")
                                              if Path(p).exists()), None)
    if mkfs is None:
        raise HarnessError("mkfs.ext4 not found (Debian package e2fsprogs): needed for workload.phases.disk_mb")
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="scratch-") as d:
        image = Path(d) / "scratch.img"
        with open(image, "wb") as fh:
            fh.truncate(size_mb << 20)
        r = procs.run_group([mkfs, "-q", "-F", "-L", "scratch", str(image)], capture_output=True, text=True)
        if r.returncode:
            raise HarnessError(f"mkfs.ext4 {image} failed: {r.stderr.strip() or r.returncode}")
        yield image


def guest_mount_command() -> str:
    """Mount the first virtio-blk disk on MOUNT (the root is 9p, so the only vd* is ours)."""
    return (f"dev=$(ls /sys/block | grep -m1 '^vd') && mkdir -p {MOUNT} && "
            f"mount -t ext4 -o noatime /dev/$dev {MOUNT}")
