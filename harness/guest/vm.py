"""Boot a kernel under QEMU through virtme-ng, run one script in it, classify what happened.

The guest gets two host directories: the cell's results directory read-write at /mnt and a
read-only tools directory (the static workload binary) at /opt. Both paths exist on the host
and in the arm64 rootfs, which virtme-ng requires of mount points. The script reports its own
progress into /mnt/guest-status, so the host can tell "never reached the workload" (an
infrastructure failure, retried) from "the workload failed".
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, InputError

STATUS_FILE = "guest-status"
GUEST_RESULTS = "/mnt"
GUEST_TOOLS = "/opt"


@dataclass(frozen=True)
class GuestConfig:
    arch: str
    image: Path
    cpus: int = 2
    memory: str = "1G"
    accel: str = "tcg"            # kvm | tcg (auto is resolved before this point)
    timing: str = "virtual"       # virtual (-icount) | realtime
    icount_shift: int = 0
    arm64_cpu: str = "cortex-a57"
    cmdline: tuple[str, ...] = ()
    root: Path | None = None      # arm64 rootfs; None = the host's filesystem
    tools_dir: Path | None = None
    disks: tuple[Path, ...] = ()  # raw images, seen in the guest as /dev/vd* (virtio-blk) in this order


@dataclass
class GuestResult:
    outcome: str                  # ok | splat | workload-failed | panic | hang | boot-failed
    reason: str
    console_log: Path
    wall_s: float
    exit_code: int | None = None
    started: bool = False         # the script reached the workload
    guest_uptime_at_start_s: float | None = None
    status: dict[str, str] = field(default_factory=dict)
    boot_wall_s: float | None = None   # host wall time from vng start to the workload's start

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def infrastructure(self) -> bool:
        """Died before the workload for a reason worth a retry: no clean panic message of its own
        (a bad init or root panics the same way every time), or a panic out of an oops (seen:
        an int3 oops in live text patching under multi-threaded TCG)."""
        if self.started:
            return False
        if self.outcome in ("boot-failed", "hang"):
            return True
        return self.outcome == "panic" and "Fatal exception" in self.reason


# TCG's default qemu64 model reports no constant TSC, so x86 registers a cpufreq transition
# notifier that marks the TSC unstable on the first simulated frequency change and keeps
# schedutil off its fast-switch path. QEMU's TSC is virtual and constant, so say so through an
# Intel family-6 identity (the kernel infers constant_tsc from it); the feature set stays qemu64's.
X86_TCG_CPU = "qemu64,vendor=GenuineIntel,family=6,model=85,stepping=4"


def vng_command(cfg: GuestConfig, results_dir: Path, script: str) -> list[str]:
    if "=" in str(results_dir) or "," in str(results_dir):
        raise InputError(f"{results_dir}: virtme-ng cannot share a directory whose path has '=' or ','; "
                         "pick another --results-dir")
    # --cwd must lie inside the guest's root; 9p always (virtiofsd start-up fails on these hosts and
    # costs retries before vng falls back to 9p anyway).
    cmd = ["vng", "--run", str(cfg.image), "--cpus", str(cfg.cpus), "--memory", cfg.memory, "--verbose",
           "--force-9p", "--cwd", str(cfg.root or "/"), f"--rwdir={GUEST_RESULTS}={results_dir}"]
    if cfg.tools_dir is not None:
        cmd.append(f"--rodir={GUEST_TOOLS}={cfg.tools_dir}")
    for disk in cfg.disks:
        cmd += ["--disk", str(disk)]
    if cfg.accel != "kvm":
        cmd.append("--disable-kvm")
    if cfg.arch == "arm64":
        cmd += ["--arch", "arm64"]
    if cfg.root is not None:
        cmd += ["--root", str(cfg.root)]
    qemu_opts = []
    if cfg.timing == "virtual":
        qemu_opts.append(f"-icount shift={cfg.icount_shift},sleep=on")
    if cfg.arch == "arm64" and cfg.accel != "kvm":
        qemu_opts.append(f"-cpu {cfg.arm64_cpu}")
    if cfg.arch == "x86_64" and cfg.accel != "kvm":
        qemu_opts.append(f"-cpu {X86_TCG_CPU}")
    if qemu_opts:
        cmd.append("--qemu-opts=" + " ".join(qemu_opts))
    if cfg.cmdline:
        cmd.append("--append=" + " ".join(cfg.cmdline))
    cmd += ["--exec", script]
    return cmd


def read_status(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


_PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
_OOPS = re.compile(r"(BUG: [^\n]*|Oops: [^\n]*|general protection fault[^\n]*|int3: [^\n]*)")
# What the kernel's checkers print (lockdep, KASAN, UBSAN, might_sleep, WARN_ON) and the run survives.
_SPLAT = re.compile(r"(WARNING: [^\n]*|BUG: [^\n]*|UBSAN: [^\n]*|Oops: [^\n]*|general protection fault[^\n]*)")


def splats(console: str) -> list[str]:
    """Every checker or oops headline in a console log, in order (empty on a clean run)."""
    return [m.group(0).strip() for m in _SPLAT.finditer(console)]


def classify(rc: int | None, timed_out: bool, console: str, status: dict[str, str]) -> tuple[str, str]:
    """Outcome and a one-line reason, from vng's exit, the console and the script's status file."""
    started = "workload_start" in status
    if "workload_exit" in status and status["workload_exit"].lstrip("-").isdigit():
        code = int(status["workload_exit"])
        if "platform_mismatch" in status:
            return "platform-failed", f"platform knob did not hold: {status['platform_mismatch']}"
        if "setup_failed" in status:
            return "workload-failed", f"guest setup step {status['setup_failed']} failed (exit {code})"
        if "probe_failed" in status:
            return "probe-failed", f"probe {status['probe_failed']} did not attach"
        if code == 0:
            if found := splats(console):
                return "splat", f"workload completed but the kernel complained ({len(found)}x): {found[0]}"
            return "ok", "workload completed"
        if code == 127:
            return "workload-failed", f"workload binary not found (exit 127): {status.get('workload_cmd', '')}"
        return "workload-failed", f"workload exited with {code}"
    if m := _PANIC.search(console):
        where = "during the workload" if started else "before the workload started"
        return "panic", f"kernel panic {where}: {m.group(0).strip()}"
    if timed_out:
        where = ("after the loop ended (stopping probes or syncing)" if "workload_end" in status
                 else "during the workload" if started else "before the workload started")
        oops = _OOPS.search(console)
        return "hang", f"guest timed out {where}" + (f" (console: {oops.group(0).strip()})" if oops else "")
    oops = _OOPS.search(console)
    if "workload_end" in status:
        return "hang", (f"guest exited (vng exit {rc}) after the loop ended, before the script did "
                        "(stopping probes or syncing)" + (f": {oops.group(0).strip()}" if oops else ""))
    return "boot-failed", (f"guest exited (vng exit {rc}) before the workload finished"
                           + (f": {oops.group(0).strip()}" if oops else ""))


def run_guest(cfg: GuestConfig, results_dir: Path, script: str, timeout_s: float,
              console_name: str = "console.log", boot_timeout_s: float | None = None) -> GuestResult:
    """Boot, run `script` (a shell command line in the guest), power off. Never leaves QEMU behind."""
    results_dir.mkdir(parents=True, exist_ok=True)
    console_path = results_dir / console_name
    status_path = results_dir / STATUS_FILE
    status_path.unlink(missing_ok=True)
    cmd = vng_command(cfg, results_dir, script)
    t0 = time.monotonic()
    timed_out = False
    with open(console_path, "w") as console:
        console.write("$ " + shlex.join(cmd) + "\n")
        console.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except FileNotFoundError:
            raise HarnessError("vng (virtme-ng) not found: bash scripts/setup.sh") from None
        try:
            rc, boot_wall = None, None
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t0
                if boot_wall is None and "workload_start" in read_status(status_path):
                    boot_wall = elapsed
                if elapsed > timeout_s or (boot_wall is None and boot_timeout_s and elapsed > boot_timeout_s):
                    timed_out = True
                    break
        finally:
            # vng runs QEMU in its session: kill the whole group whatever happened (Ctrl-C, or vng
            # itself gone while QEMU lingers).
            with _suppress():
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.monotonic() - t0
    text = console_path.read_text(errors="replace")
    status = read_status(status_path)
    outcome, reason = classify(rc, timed_out, text, status)
    try:
        uptime = float(status["workload_start"]) if "workload_start" in status else None
    except ValueError:
        uptime = None
    return GuestResult(outcome, reason, console_path, wall, rc, "workload_start" in status, uptime, status, boot_wall)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)
