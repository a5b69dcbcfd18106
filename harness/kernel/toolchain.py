"""Identity of the toolchain: part of every build's cache key."""

from __future__ import annotations

import functools
import shutil
import subprocess

from harness.kernel.arch import KernelArch


def _first_line(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "absent"
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


@functools.cache
def identity(arch: KernelArch) -> dict[str, str]:
    """Versions of everything whose output ends up in the kernel image or its BTF."""
    p = arch.compile_prefix
    return {
        "gcc": _first_line([f"{p}gcc", "--version"]),
        "ld": _first_line([f"{p}ld", "--version"]),
        "hostcc": _first_line(["gcc", "--version"]),
        "pahole": _first_line(["pahole", "--version"]),
        "make": _first_line(["make", "--version"]),
    }
