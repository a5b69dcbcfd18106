"""A guest backend that boots nothing: it replays what a real guest wrote.

A recording is a directory taken from a real run: the share as the guest left it plus the
console log (`console.log`) and `recording.json` (the cell it came from: arch, repeats, probes).
`FakeBackend.run` copies the recording into the share, writes its console, and classifies the
outcome with the same code as a real boot. Scripted attempts (`boot-failed`, `hang`, `panic`)
and a `hostile` hook that rewrites the share afterwards (plant links, huge files, garbage) let
tests drive resume, retries, every kind of failure and a hostile guest in seconds.
A `FakeKernels` stands in for the kernel builder: an image and a System.map, no make.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.guest import protocol
from harness.guest.accel import AccelChoice
from harness.guest.vm import GuestConfig, GuestResult, classify, read_console
from harness.kernel import build as kbuild
from harness.kernel.build import BuildResult, KernelRequest

RECORDING_META = "recording.json"
RECORDING_CONSOLE = "console.log"

# Consoles of scripted failures, the way a real guest ends in each.
_CONSOLES = {
    "boot-failed": "virtme-init: cannot find script I/O ports; make sure virtio-serial is available\n",
    "panic": "Kernel panic - not syncing: System is deadlocked on memory\n",
    "oops-panic": "BUG: unable to handle page fault\nKernel panic - not syncing: Fatal exception\n",
    "hang": "",
}


@dataclass
class FakeBackend:
    """`recordings`: arch -> recording directory. `attempts`: what each boot does, in order, until
    the list runs out ("replay" = the recording; a key of _CONSOLES = that failure before the
    workload; "timeout" = the recording's status up to the workload start, then a hang)."""

    recordings: dict[str, Path]
    attempts: list[str] = field(default_factory=list)
    hostile: Callable[[Path, int], None] | None = None
    name: str = "fake"
    runs: list[dict] = field(default_factory=list)

    def host_facts(self, arch: str) -> dict[str, str]:
        return {"qemu": "QEMU emulator version 0 (fake backend: recorded guest output)", "host_cpu": "fake",
                "host_kernel": "fake", "host_machine": "fake", "kvm_device": "False"}

    def accel(self, requested: str, arch: str, image: Path) -> AccelChoice:
        return AccelChoice("tcg", "fake backend")

    def rootfs(self, arch: str) -> Path | None:
        return None

    def tools(self, arch: str) -> Path:
        return self.recordings[arch]

    @contextlib.contextmanager
    def scratch(self, size_mb: int) -> Iterator[Path]:
        yield Path(f"/nonexistent/fake-scratch-{size_mb}M.img")

    def run(self, cfg: GuestConfig, share_dir: Path, command: str, timeout_s: float, console: Path,
            boot_timeout_s: float | None) -> GuestResult:
        attempt = len(self.runs)
        what = self.attempts[attempt] if attempt < len(self.attempts) else "replay"
        self.runs.append({"arch": cfg.arch, "share": share_dir, "what": what, "command": command,
                          "script": (share_dir / protocol.GUEST_SCRIPT).read_text()})
        rec = self.recordings[cfg.arch]
        timed_out, rc = False, 0
        if what == "replay":
            _copy_share(rec, share_dir)
            text = (rec / RECORDING_CONSOLE).read_text(errors="replace")
        elif what == "timeout":
            _copy_share(rec, share_dir)
            status = protocol.parse_status((rec / protocol.STATUS).read_text())
            keep = [f"{k}={v}" for k, v in status.items() if k in (protocol.Key.GUEST_UP, protocol.Key.KERNEL,
                                                                   protocol.Key.WORKLOAD_START)]
            (share_dir / protocol.STATUS).write_text("\n".join(keep) + "\n")
            text, timed_out, rc = "", True, None
        else:
            text, rc = _CONSOLES[what], 255
        if self.hostile is not None:
            self.hostile(share_dir, attempt)
        with open(console, "x") as fh:   # as run_guest does: a new file, never through a name
            fh.write(text)
        status = protocol.read_status(share_dir)
        outcome, reason = classify(rc, timed_out, read_console(console), status)
        return GuestResult(outcome, reason, console, 0.1, rc, protocol.Key.WORKLOAD_START in status,
                           protocol.uptime_at(status, protocol.Key.WORKLOAD_START), status, 0.1,
                           ("fake-guest", cfg.arch, what))


def _copy_share(rec: Path, share_dir: Path) -> None:
    for f in rec.iterdir():
        if f.name in (RECORDING_META, RECORDING_CONSOLE, protocol.GUEST_SCRIPT) or not f.is_file():
            continue
        shutil.copyfile(f, share_dir / f.name)


def recording_meta(rec: Path) -> dict:
    return json.loads((rec / RECORDING_META).read_text())


@dataclass
class FakeKernels:
    """The kernel builder's interface, without a build: an image file and a System.map."""

    root: Path
    release: str = "6.12.0-fake"
    symbols: tuple[str, ...] = ()
    fail: dict[str, str] = field(default_factory=dict)   # variant label -> the build error
    builds: list[str] = field(default_factory=list)
    sched_ext: bool = False                              # builds with the sched_ext schedulers
    config: str = "CONFIG_KEXEC=y\n"                    # the build's .config (what the runner checks)

    def build(self, req: KernelRequest) -> BuildResult:
        self.builds.append(req.label)
        if req.variant in self.fail:
            raise HarnessError(self.fail[req.variant])
        d = self.root / f"{req.arch}-{req.variant}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "bzImage").write_bytes(b"fake")
        (d / "System.map").write_text("".join(f"ffffffff81000000 T {s}\n" for s in self.symbols))
        (d / "config").write_text(self.config)
        meta = {"key": f"fake-{req.arch}-{req.variant}", "kernel_release": self.release,
                "artifacts": {"image": "bzImage", "vmlinux": "vmlinux", "system_map": "System.map"}}
        if self.sched_ext:   # laid out as KernelBuilder._sched_ext lays out a real build's
            (d / kbuild.SCHED_EXT_DIR).mkdir(exist_ok=True)
            for name in kbuild.SCHED_EXT_SCHEDULERS:
                (d / kbuild.SCHED_EXT_DIR / name).write_bytes(b"\x7fELF fake " + name.encode())
            meta["artifacts"]["sched_ext"] = kbuild.SCHED_EXT_DIR
        return BuildResult(req, meta["key"], d, True, 0.0, meta)
