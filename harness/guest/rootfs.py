"""The arm64 guest's root filesystem: a Debian bookworm arm64 userland built once with
mmdebstrap (through qemu-user-static + binfmt_misc) and cached by content.

x86_64 guests use the host's own filesystem, the way virtme-ng does by default: the host is
Debian 12 with bpftrace installed by scripts/setup.sh, so the guest has the same tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rich.console import Console

from harness import procs
from harness.errors import HarnessError
from harness.kernel.cache import BuildCache, sha256_json
from harness.kernel.progress import LiveProgress

RELEASE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
# What virtme-ng's init and the harness need inside the guest: a shell and core utilities,
# mount (virtme-init fails without it), udev, bpftrace for the probes.
PACKAGES = ("bash", "coreutils", "mount", "util-linux", "procps", "kmod", "udev", "iproute2",
            "busybox-static", "bpftrace")
RECIPE = 2


def rootfs_key(arch: str = "arm64") -> str:
    return sha256_json({"recipe": RECIPE, "arch": arch, "release": RELEASE, "packages": sorted(PACKAGES),
                        "mmdebstrap": _version("mmdebstrap")})[:16]


def _version(tool: str) -> str:
    if shutil.which(tool) is None:
        return "absent"
    out = subprocess.run([tool, "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip()


def ensure_binfmt(qemu_user: str = "qemu-aarch64") -> None:
    """Foreign-arch binaries must run through qemu-user-static while mmdebstrap configures packages."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
    if not (binfmt / qemu_user).exists():
        subprocess.run(["update-binfmts", "--enable", qemu_user], capture_output=True)
    if not (binfmt / qemu_user).exists():
        raise HarnessError(f"binfmt_misc has no {qemu_user} entry: install qemu-user-static and binfmt-support "
                           "(bash scripts/setup.sh) and make sure binfmt_misc can be mounted")


def _run_logged(cmd: list[str], stdin_text: str, log, progress: RootfsProgress) -> int:
    """mmdebstrap in its own process group; every output line to the log and to the progress view."""
    with procs.spawn_group(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "LC_ALL": "C"}, bufsize=1) as proc:
        proc.stdin.write(stdin_text)
        proc.stdin.close()
        for line in proc.stdout:
            log.write(line)
            progress.feed(line)
        return proc.wait()


class RootfsProgress(LiveProgress):
    """mmdebstrap's stages (its `I: ...` lines) and the packages apt has set up so far: a line per
    stage off a terminal, a heartbeat at most every interval, so a 4-minute build is not silent."""

    kind = "rootfs"

    def __init__(self, label: str, console: Console | None = None, interval: float = 60.0):
        super().__init__(label, console, interval)
        self.stage = "starting mmdebstrap"
        self.packages = 0

    def feed(self, line: str) -> None:
        """One line of mmdebstrap's output (its own messages and apt's)."""
        if line.startswith("I: "):
            self.stage = line[3:].strip().rstrip(".")[:120]
            self._refresh(force=True)
            return
        if line.startswith("Setting up "):
            self.packages += 1
        self._refresh()

    def _text(self) -> str:
        return f"[rootfs {self.label}] {self.stage}: {self.packages} packages set up, {self._elapsed()}"


def ensure_rootfs(cache: BuildCache, arch: str = "arm64", console: Console | None = None) -> Path:
    """The cached rootfs directory for `arch`, built on first use (about 2-4 minutes, with progress)."""
    if arch != "arm64":
        raise HarnessError(f"no rootfs recipe for {arch}: x86_64 guests use the host's filesystem")
    key = rootfs_key(arch)
    root = cache.dir("rootfs") / f"{arch}-{key}"
    with cache.lock(f"rootfs-{key}"):
        if (root / ".harness-complete").is_file():
            return root
        if shutil.which("mmdebstrap") is None:
            raise HarnessError("mmdebstrap not found: install it (bash scripts/setup.sh)")
        cache.require_free(3.0, f"building the {arch} rootfs")
        ensure_binfmt()
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log_path = cache.dir("logs") / f"rootfs-{arch}-{key}.log"
        sources = (f"deb {MIRROR} {RELEASE} main\ndeb {MIRROR} {RELEASE}-updates main\n"
                   f"deb {SECURITY} {RELEASE}-security main\n")
        cmd = ["mmdebstrap", f"--arch={arch}", "--variant=apt", f"--include={','.join(PACKAGES)}",
               *[f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")],
               RELEASE, str(tmp), "-"]
        with open(log_path, "w") as fh, RootfsProgress(arch, console) as progress:
            rc = _run_logged(cmd, sources, fh, progress)
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise HarnessError(f"building the {arch} rootfs failed; log: {log_path}\n{tail}")
        (tmp / ".harness-complete").write_text(" ".join(cmd) + "\n")
        tmp.rename(root)
    return root
