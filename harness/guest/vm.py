"""Boot a kernel under QEMU through virtme-ng, run one script in it, classify what happened.

The guest gets two host directories: the cell's share read-write at protocol.GUEST_RESULTS and a
read-only tools directory (the static workload binary) at protocol.GUEST_TOOLS. Both paths exist on
the host and in the arm64 rootfs, which virtme-ng requires of mount points. The script reports its
own progress into the status file, so the host can tell "never reached the workload" (an
infrastructure failure, retried) from "the workload failed".

virtme-ng joins its arguments into one shell string (`shell=True`), so every path handed to it is
checked against a plain character set first, and so are the kernel command line items (the spec
already refuses unsafe ones; this is the last line). The console log is written by the host,
outside the share, into a file created exclusively.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.guest import protocol, share
from harness.procs import spawn_group

# What virtme-ng's shell string can carry unquoted: no blanks, quotes, $, ;, `, =, or commas.
SAFE_PATH = re.compile(r"[A-Za-z0-9_./+-]+")
SAFE_TOKEN = re.compile(r"[A-Za-z0-9_./+:,=-]+")
CONSOLE_TAIL = 16 << 20   # the end of a console log is where panics and oopses are
CONSOLE_LIMIT = 256 << 20  # what of a guest's console is kept on the host
_EXIT_CODE = re.compile(r"-?[0-9]{1,5}")   # ASCII digits only: str.isdigit() takes '²' too


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
    build_key: str | None = None  # a remote target with kernel deploy: the build to boot there (`image`)
    release: str | None = None    # ... and the release it must report


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
    command: tuple[str, ...] = ()      # what was run on the host (vng's argv)
    facts: dict[str, str] = field(default_factory=dict)   # a remote target's identity (harness.target.ssh)

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


def check_path(path: Path | str, what: str) -> str:
    """A path as virtme-ng may see it, or an input error naming it."""
    text = str(path)
    if not SAFE_PATH.fullmatch(text):
        bad = sorted({c for c in text if not SAFE_PATH.fullmatch(c)})
        raise InputError(f"{what} {text!r} has characters virtme-ng would pass to a shell unquoted "
                         f"({' '.join(repr(c) for c in bad)}); use a path of letters, digits and ._+-/ only")
    return text


def vng_command(cfg: GuestConfig, results_dir: Path, script: str) -> list[str]:
    results = check_path(results_dir, "results directory")
    image = check_path(cfg.image, "kernel image")
    for item in cfg.cmdline:
        if not SAFE_TOKEN.fullmatch(item):
            raise InputError(f"kernel command line item {item!r} is not a single plain token")
    # --cwd must lie inside the guest's root; 9p always (virtiofsd start-up fails on these hosts and
    # costs retries before vng falls back to 9p anyway).
    cmd = ["vng", "--run", image, "--cpus", str(cfg.cpus), "--memory", cfg.memory, "--verbose",
           "--force-9p", "--cwd", check_path(cfg.root or "/", "root filesystem"),
           f"--rwdir={protocol.GUEST_RESULTS}={results}"]
    if cfg.tools_dir is not None:
        cmd.append(f"--rodir={protocol.GUEST_TOOLS}={check_path(cfg.tools_dir, 'tools directory')}")
    for disk in cfg.disks:
        cmd += ["--disk", check_path(disk, "scratch disk")]
    if cfg.accel != "kvm":
        cmd.append("--disable-kvm")
    if cfg.arch == "arm64":
        cmd += ["--arch", "arm64"]
    if cfg.root is not None:
        cmd += ["--root", check_path(cfg.root, "root filesystem")]
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


_PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
_OOPS = re.compile(r"(BUG: [^\n]*|Oops: [^\n]*|general protection fault[^\n]*|int3: [^\n]*)")
# What the kernel's checkers print (lockdep, KASAN, UBSAN, might_sleep, WARN_ON) and the run survives.
_SPLAT = re.compile(r"(WARNING: [^\n]*|BUG: [^\n]*|UBSAN: [^\n]*|Oops: [^\n]*|general protection fault[^\n]*)")


def kernel_log(console: str) -> str:
    """The kernel's part of a console log: from its banner on. Before it stand vng's and QEMU's own
    messages (e.g. QEMU's "WARNING: Image format was not specified" for a raw scratch disk), which
    are no kernel splat."""
    i = console.find("Linux version ")
    return console[i:] if i >= 0 else console


def splats(console: str) -> list[str]:
    """Every checker or oops headline the kernel printed, in order (empty on a clean run)."""
    return [m.group(0).strip() for m in _SPLAT.finditer(kernel_log(console))]


def classify(rc: int | None, timed_out: bool, console: str, status: dict[str, str]) -> tuple[str, str]:
    """Outcome and a one-line reason, from vng's exit, the console and the script's status file.
    Whatever the guest said is quoted as a short, sanitised excerpt."""
    K = protocol.Key
    started = K.WORKLOAD_START in status
    said = {k: share.excerpt(v, 120) for k, v in status.items()}
    code_text = status.get(K.WORKLOAD_EXIT, "")
    if _EXIT_CODE.fullmatch(code_text):
        code = int(code_text)
        if K.PLATFORM_MISMATCH in status:
            return "platform-failed", f"platform knob did not hold: {said[K.PLATFORM_MISMATCH]}"
        if K.SETUP_FAILED in status:
            return "workload-failed", f"guest setup step {said[K.SETUP_FAILED]} failed (exit {code})"
        if K.PROBE_FAILED in status:
            return "probe-failed", f"probe {said[K.PROBE_FAILED]} did not attach"
        if code == 0:
            if found := splats(console):
                return "splat", (f"workload completed but the kernel complained ({len(found)}x): "
                                 f"{share.excerpt(found[0])}")
            return "ok", "workload completed"
        if code == 127:
            return "workload-failed", f"workload binary not found (exit 127): {said.get(K.WORKLOAD_CMD, '')}"
        return "workload-failed", f"workload exited with {code}"
    if m := _PANIC.search(console):
        where = "during the workload" if started else "before the workload started"
        return "panic", f"kernel panic {where}: {share.excerpt(m.group(0))}"
    oops = _OOPS.search(console)
    oops_said = share.excerpt(oops.group(0)) if oops else ""
    if timed_out:
        where = ("after the loop ended (stopping probes or syncing)" if K.WORKLOAD_END in status
                 else "during the workload" if started else "before the workload started")
        return "hang", f"guest timed out {where}" + (f" (console: {oops_said})" if oops else "")
    if K.WORKLOAD_END in status:
        return "hang", (f"guest exited (vng exit {rc}) after the loop ended, before the script did "
                        "(stopping probes or syncing)" + (f": {oops_said}" if oops else ""))
    return "boot-failed", (f"guest exited (vng exit {rc}) before the workload finished"
                           + (f": {oops_said}" if oops else ""))


def read_console(path: Path) -> str:
    """The end of a console log (host-written, but its content is the guest's and unbounded)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - CONSOLE_TAIL))
        return fh.read().decode("utf-8", errors="replace")


def _copy_console(rfd: int, dst) -> None:
    written, dropped = 0, 0
    try:
        while chunk := os.read(rfd, 1 << 16):
            if written + len(chunk) <= CONSOLE_LIMIT:
                dst.write(chunk)
                written += len(chunk)
            else:
                dropped += len(chunk)
        if dropped:
            dst.write(f"\n[harness: {dropped} more bytes of console output dropped]\n".encode())
        dst.flush()
    finally:
        os.close(rfd)


def run_guest(cfg: GuestConfig, share_dir: Path, script: str, timeout_s: float, console_path: Path,
              boot_timeout_s: float | None = None) -> GuestResult:
    """Boot, run `script` (a shell command line in the guest), power off. Never leaves QEMU behind:
    the whole process group goes when this returns, raises or the harness is signalled.
    `boot_timeout_s` bounds power-on to the workload's start (`timeout_s` if None), `timeout_s`
    the rest, and their sum the whole guest."""
    cmd = vng_command(cfg, share_dir, script)
    boot_limit = timeout_s if boot_timeout_s is None else boot_timeout_s
    t0 = time.monotonic()
    timed_out = False
    rc, boot_wall = None, None
    if shutil.which(cmd[0]) is None:
        raise HarnessError("vng (virtme-ng) not found: bash scripts/setup.sh")
    # vng's output goes through a pipe that one thread copies to the log: QEMU reopens its stdout
    # (/proc/self/fd/1) as a file chardev, which on a regular file would start a second write
    # offset at 0 (and truncate), so the log's start would be overwritten; on a pipe every writer
    # is serialised. The copy is capped: the console is the guest's to fill.
    with share.create_exclusive(console_path, "wb") as console:
        console.write(("$ " + shlex.join(cmd) + "\n").encode())
        console.flush()
        rfd, wfd = os.pipe()   # our own pipe: the copier owns its read end, spawn_group never closes it
        copier = threading.Thread(target=_copy_console, args=(rfd, console), daemon=True)
        copier.start()
        writer_open = True
        try:
            with spawn_group(cmd, stdout=wfd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) as proc:
                os.close(wfd)   # only the group writes now: EOF once the last of it is gone
                writer_open = False
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    elapsed = time.monotonic() - t0
                    if boot_wall is None and protocol.Key.WORKLOAD_START in protocol.read_status(share_dir):
                        boot_wall = elapsed
                    # the boot is bounded by its own timeout, the run from the workload's start:
                    # a slow boot (a loaded host under TCG) never eats into the run's time; the
                    # whole guest, by their sum (whenever the guest says it started)
                    if (elapsed > boot_limit if boot_wall is None
                            else elapsed - boot_wall > timeout_s or elapsed > boot_limit + timeout_s):
                        timed_out = True
                        break
        finally:   # the group is gone (spawn_group's exit): the pipe reaches EOF
            if writer_open:
                os.close(wfd)
            copier.join(timeout=10)
    wall = time.monotonic() - t0
    status = protocol.read_status(share_dir)
    outcome, reason = classify(rc, timed_out, read_console(console_path), status)
    uptime = protocol.uptime_at(status, protocol.Key.WORKLOAD_START)
    return GuestResult(outcome, reason, console_path, wall, rc, protocol.Key.WORKLOAD_START in status, uptime,
                       status, boot_wall, tuple(cmd))
