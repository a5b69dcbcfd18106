"""Which accelerator a guest runs under, decided by a real boot rather than by /dev/kvm.

/dev/kvm can exist while no guest boots under it (nested hypervisors: seen on these
machines, where QEMU stalls after "Booting from ROM" or aborts on an MSR write). `auto`
therefore boots the kernel once under KVM with a short timeout and falls back to TCG; the
answer is cached per host (host kernel, QEMU version, CPU model) so the probe runs once. Delete
state/kvm-probe.json in the cache to probe again.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.guest import protocol
from harness.guest.vm import GuestConfig, run_guest
from harness.kernel import arch as archmod
from harness.kernel.cache import BuildCache, atomic_write_text, sha256_json

QEMU_BINARY = {"x86_64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
PROBE_TIMEOUT_S = 60


def qemu_version(arch: str) -> str:
    exe = QEMU_BINARY[arch]
    if shutil.which(exe) is None:
        raise HarnessError(f"{exe} not found: bash scripts/setup.sh")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def host_cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_facts(arch: str) -> dict[str, str]:
    return {"qemu": qemu_version(arch), "host_cpu": host_cpu_model(), "host_kernel": platform.release(),
            "host_machine": platform.machine(), "kvm_device": str(os.access("/dev/kvm", os.R_OK | os.W_OK))}


@dataclass(frozen=True)
class AccelChoice:
    accel: str      # kvm | tcg
    reason: str


def resolve(requested: str, arch: str, image: Path, cache: BuildCache) -> AccelChoice:
    if requested == "tcg":
        return AccelChoice("tcg", "requested")
    if not archmod.get(arch).native:
        if requested == "kvm":
            raise InputError(f"accel 'kvm' cannot run an {arch} guest on a {platform.machine()} host")
        return AccelChoice("tcg", f"{arch} guest on a {platform.machine()} host")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        if requested == "kvm":
            raise HarnessError("accel 'kvm' requested but /dev/kvm is missing or not accessible")
        return AccelChoice("tcg", "no usable /dev/kvm")
    facts = host_facts(arch)
    memo = cache.dir("state") / "kvm-probe.json"
    key = sha256_json(facts)
    try:
        known = json.loads(memo.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        known = {}
    if key not in known:
        boots, conclusive = _probe(arch, image, cache)
        if not conclusive:   # the kernel itself failed: says nothing about KVM, do not remember it
            return AccelChoice("tcg", "KVM probe inconclusive (the kernel panicked); not cached")
        known[key] = {"kvm_boots": boots, "facts": facts}
        atomic_write_text(memo, json.dumps(known, indent=1))
    if known[key]["kvm_boots"]:
        return AccelChoice("kvm", "KVM boot probe succeeded")
    if requested == "kvm":
        raise HarnessError(f"accel 'kvm' requested but a guest does not boot under KVM on this host "
                           f"(probe log: {cache.root / 'logs' / 'kvm-probe.log'})")
    return AccelChoice("tcg", "/dev/kvm present but a guest did not boot under KVM (probe)")


def _probe(arch: str, image: Path, cache: BuildCache) -> tuple[bool, bool]:
    """(boots under KVM, the answer is about KVM rather than about this kernel)."""
    with tempfile.TemporaryDirectory(prefix="kvm-probe-", dir=cache.dir("tmp")) as d:
        cfg = GuestConfig(arch=arch, image=image, cpus=1, memory="512M", accel="kvm", timing="realtime")
        share_dir = Path(d) / protocol.SHARE
        share_dir.mkdir()
        res = run_guest(cfg, share_dir, protocol.kvm_probe_script(), PROBE_TIMEOUT_S, Path(d) / "console.log")
        shutil.copy(res.console_log, cache.dir("logs") / "kvm-probe.log")
        return res.ok, res.ok or res.outcome != "panic"
