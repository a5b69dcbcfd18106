"""Build agentloop.c as a static binary for an arch, once per (source, compiler)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError
from harness.kernel import arch as archmod
from harness.kernel import toolchain
from harness.kernel.cache import BuildCache, sha256_bytes, sha256_json

SOURCE = Path(__file__).resolve().parent / "agentloop.c"
CFLAGS = ["-O2", "-static", "-pthread", "-Wall", "-Wextra", "-Werror"]


def workload_dir(cache: BuildCache, arch: str) -> Path:
    """A directory holding `agentloop` for `arch` (it is shared read-only with the guest)."""
    a = archmod.get(arch)
    key = sha256_json({"src": sha256_bytes(SOURCE.read_bytes()), "cflags": CFLAGS,
                       "cc": toolchain.identity(a)["gcc"]})[:16]
    out = cache.dir("workload") / f"{arch}-{key}"
    if (out / "agentloop").is_file():
        return out
    with cache.lock(f"workload-{arch}-{key}"):
        if not (out / "agentloop").is_file():
            _compile(a, out, arch)
    return out


def _compile(a: archmod.KernelArch, out: Path, arch: str) -> None:
    cc = a.compiler()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp / "agentloop"), str(SOURCE), "-lm"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = " (arm64 needs libc6-dev-arm64-cross: bash scripts/setup.sh)" if arch == "arm64" else ""
        raise HarnessError(f"building the workload for {arch} failed{hint}:\n{proc.stderr.strip()}")
    tmp.rename(out)
