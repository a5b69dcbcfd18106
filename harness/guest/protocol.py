"""The guest protocol: what the host puts in the share, what the guest script writes back, and
the names of both. Nothing else in the harness spells these names.

The cell's share is a directory of the cell's results (`SHARE`) that the guest sees read-write at
GUEST_RESULTS; the workload binary comes read-only at GUEST_TOOLS. The host writes the guest
script, the probes' bpftrace scripts and the wait-time file there before every boot; the guest
writes its progress (the status file, key=value lines), a steps file, a summary, stderr and two
platform snapshots per repeat, and each probe's output. The host reads them back only through
`harness.guest.share` (no links followed, bounded sizes).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness.guest import platform, scratch, share
from harness.probes import bpftrace_json
from harness.spec.model import WorkloadSpec
from harness.workload.command import workdir, workload_args

SHARE = "guest"                # <cell>/guest on the host
GUEST_RESULTS = "/mnt"         # ... seen here in the guest
GUEST_TOOLS = "/opt"           # the workload binary, read-only
STATUS = "guest-status"
GUEST_SCRIPT = "guest.sh"
PROBES_DIR = "probes"
WAIT_FILE = "wait-times.txt"
COMPUTE_FILE = "compute-units.txt"   # workload.compute.file, copied in like the wait-time file
FILE_INDEX = "files.txt"       # device, inode and path of the workload's files, for probes that see inodes
AGENTLOOP = f"{GUEST_TOOLS}/agentloop"
PROBED = "probed"              # the run the probes attach to, when they get a run of their own
ABUSER = f"{GUEST_TOOLS}/abuser"
SCHED_EXT_BIN = "sched_ext"    # platform.sched_ext: the scheduler's loader, copied into the share
SCHED_EXT_LOG = "sched_ext.log"


class AbuserFiles:
    """What the abuser (harness.guest.neighbour) leaves in the share."""

    RESULT = "abuser.json"              # its own summary: work, whether it could mark
    STDERR = "abuser-stderr.txt"
    STAT = "abuser-stat.txt"            # its cgroup's cpu.agent.stat and cpu.agent.budget, at its end
    AGENT_STAT = "agent-stat.txt"       # the agent's (sibling) cgroup's, likewise
    BEFORE = "abuser-before.txt"        # platform snapshots over its whole life
    AFTER = "abuser-after.txt"


class Key:
    """Status keys the guest script writes (one `key=value` per line)."""

    GUEST_UP = "guest_up"
    KERNEL = "kernel"
    CPUS = "cpus"
    SETUP_FAILED = "setup_failed"
    PLATFORM_MISMATCH = "platform_mismatch"
    PROBE_FAILED = "probe_failed"
    WORKLOAD_CMD = "workload_cmd"
    WORKLOAD_START = "workload_start"
    WORKLOAD_END = "workload_end"
    WORKLOAD_EXIT = "workload_exit"
    PROBED_EXIT = "probed_exit"

    @staticmethod
    def repeat_exit(r: int) -> str:
        return f"repeat_{r}_exit"

    @staticmethod
    def probe_attached(name: str) -> str:
        return f"probe_{name}_attached"


# Exit codes of the script's own failures (the loop's own codes pass through).
EXIT_SETUP = 3
EXIT_PROBE = 4


@dataclass(frozen=True)
class RunFiles:
    """The files one run of the loop leaves in the share (`tag`: the repeat, or PROBED)."""

    tag: str

    @property
    def steps(self) -> str:
        return f"steps-{self.tag}.csv"

    @property
    def summary(self) -> str:
        return f"summary-{self.tag}.json"

    @property
    def stderr(self) -> str:
        return f"workload-{self.tag}.err"

    @property
    def meter(self) -> str:
        """The loop's own meter (agentloop --meter-out): this prefix + "-before.txt", "-after.txt"."""
        return f"meter-{self.tag}"

    @property
    def meter_before(self) -> str:
        return f"{self.meter}-before.txt"

    @property
    def meter_after(self) -> str:
        return f"{self.meter}-after.txt"

    @property
    def before(self) -> str:
        return f"platform-{self.tag}-before.txt"

    @property
    def after(self) -> str:
        return f"platform-{self.tag}-after.txt"


def repeat_files(r: int) -> RunFiles:
    return RunFiles(f"r{r}")


PROBED_FILES = RunFiles(PROBED)


def probe_output(name: str) -> str:
    return f"probe-{name}.json"


def probe_stderr(name: str) -> str:
    return f"probe-{name}.err"


def probe_script(name: str) -> str:
    return f"{PROBES_DIR}/{name}.bt"


def host_reads(repeats: int, probes: list[str], probe_run: str) -> list[str]:
    """Every file of the share the host may open after a run (the attack tests plant links on all)."""
    runs = [repeat_files(r) for r in range(repeats)]
    if probes and probe_run == "separate":
        runs.append(PROBED_FILES)
    names = [STATUS, FILE_INDEX]
    for f in runs:
        names += [f.steps, f.before, f.after, f.meter_before, f.meter_after, f.stderr]
    for p in probes:
        names += [probe_output(p), probe_stderr(p)]
    return names


# What a real target's snapshots add: RAPL (powercap) zones and hwmon power/energy sensors.
REAL_METER_GLOBS = ("/sys/class/powercap/*/name", "/sys/class/powercap/*/energy_uj",
                    "/sys/class/powercap/*/max_energy_range_uj", "/sys/class/hwmon/hwmon*/name",
                    "/sys/class/hwmon/hwmon*/power*_input", "/sys/class/hwmon/hwmon*/energy*_input")


def meter_globs(real: bool) -> tuple[str, ...]:
    """The counters the loop's meter and the shell's snapshots read: the simulated platform's, and
    on a real target its energy sensors."""
    return platform.METER_GLOBS + (REAL_METER_GLOBS if real else ())


# -- the script ----------------------------------------------------------------------------------

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def probe_cpus(w: WorkloadSpec, cpus: int) -> str | None:
    """Where bpftrace runs: off the agent's CPU when the agent is pinned, so draining the probes'
    buffers neither takes the agent's CPU nor wakes it from idle. None: anywhere."""
    if w.agent_cpu is None or cpus < 2:
        return None
    return ",".join(str(c) for c in range(cpus) if c != w.agent_cpu)


def _guest(name: str) -> str:
    return f"{GUEST_RESULTS}/{name}"


def _run(w: WorkloadSpec, files: RunFiles, seed_repeat: int, extra_args: list[str], real: bool) -> dict[str, str]:
    """One run of the loop. It meters its own measured steps (--meter): the figures a comparison
    rests on cover those steps only; the shell's snapshots around the run hold the settings."""
    meter = [a for g in meter_globs(real) for a in ("--meter", g)] + ["--meter-out", _guest(files.meter)]
    args = workload_args(w, seed_repeat, _guest(files.steps), AGENTLOOP, _guest(WAIT_FILE),
                         _guest(COMPUTE_FILE)) + meter + list(extra_args)
    return {"cmd": shlex.join(args), "summary": _guest(files.summary), "stderr": _guest(files.stderr),
            "before": _guest(files.before), "after": _guest(files.after)}


def _probe(name: str) -> dict[str, str]:
    """bpftrace writes to the guest's tmpfs and the output is copied to the share when it stops:
    a write per event over 9p would show up in the loop's timings and in the workqueue records."""
    return {"name": name, "script": _guest(probe_script(name)), "out": f"/tmp/{probe_output(name)}",
            "result": _guest(probe_output(name)), "err": _guest(probe_stderr(name)),
            "attached_key": Key.probe_attached(name)}


def render(w: WorkloadSpec, repeats: int, setup: list[str] = (), teardown: list[str] = (),
           extra_args: list[str] = (), probes: list[str] = (), attach_timeout_s: int = 120,
           probe_run: str = "separate", cpus: int = 1, real: bool = False,
           neighbour_setup: list[str] = (), sched_ext: bool = False) -> str:
    """probe_run "separate": the repeats run untraced, then the probes attach for one more run with
    repeat 0's seed, so the cell's figures never carry the observer's cost and that run against
    repeat 0 is the probes' overhead. "in-repeats": the probes trace every repeat. "whole-life":
    as in-repeats, but attached before `neighbour_setup` starts the neighbour and stopped after
    `teardown` has stopped it and read its charge, so probe and charge cover the neighbour's whole
    life. `real`: a real target's script (C-state helpers by index, energy counters in the
    snapshots). `sched_ext`: the setup starts a sched_ext scheduler (`startscx NAME`, loader at
    SCHED_EXT_BIN in the share) and the snapshots show /sys/kernel/sched_ext."""
    runs = [dict(_run(w, repeat_files(r), r, extra_args, real), index=str(r), exit_key=Key.repeat_exit(r))
            for r in range(repeats)]
    probed = _run(w, PROBED_FILES, 0, extra_args, real) if probes and probe_run == "separate" else None
    if w.phases.disk_mb:
        setup = [scratch.guest_mount_command(), *setup]
    return _ENV.get_template("run.sh.j2").render(
        status=_guest(STATUS), runs=runs, probed=probed, setup=list(setup), teardown=list(teardown),
        neighbour_setup=list(neighbour_setup), whole_life=bool(probes) and probe_run == "whole-life",
        workdir=workdir(w), file_index=_guest(FILE_INDEX), probe_cpus=probe_cpus(w, cpus),
        probes=[_probe(p) for p in probes], attach_timeout_ds=attach_timeout_s * 10,
        attached_notice=bpftrace_json.ATTACHED_NOTICE, cpu=platform.CPU,
        key=Key, exit_setup=EXIT_SETUP, exit_probe=EXIT_PROBE, real=real, meter_globs=meter_globs(real),
        sched_ext=sched_ext, sched_ext_bin=_guest(SCHED_EXT_BIN), sched_ext_log=_guest(SCHED_EXT_LOG),
        sched_ext_files=" ".join(platform.SCHED_EXT_FILES))


def kvm_probe_script() -> str:
    """The KVM boot probe's whole guest script: it reached userspace, and it ended."""
    s = _guest(STATUS)
    return f"echo {Key.WORKLOAD_START}=0 >> {s}; echo {Key.WORKLOAD_EXIT}=0 >> {s}"


def guest_command() -> str:
    """What vng runs in the guest."""
    return f"sh {_guest(GUEST_SCRIPT)}"


# -- reading back ---------------------------------------------------------------------------------

def parse_status(text: str) -> dict[str, str]:
    """key=value lines; a later value wins. Keys and values are the guest's: bounded and stripped."""
    out: dict[str, str] = {}
    for line in text.splitlines()[:2000]:
        if "=" in line:
            k, v = line.split("=", 1)
            k = k.strip()
            if k.isidentifier() and len(k) <= 64:
                out[k] = v.strip()[:4096]
    return out


_UPTIME = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def uptime_at(status: dict[str, str], key: str) -> float | None:
    """A /proc/uptime stamp the script wrote (seconds), or None if it is not one."""
    v = status.get(key, "")
    return float(v) if _UPTIME.fullmatch(v) else None


def read_status(share_dir: Path) -> dict[str, str]:
    """The status file, or {} when the guest never wrote one (or left something the host will not
    read there: a link or a huge file counts as nothing reported)."""
    try:
        text = share.read_text_or_none(share_dir / STATUS, share.LIMIT_STATUS)
    except share.ShareError:
        return {}
    return parse_status(text or "")


def _kernel_dev(user_dev: int) -> int:
    """stat's st_dev (glibc's encoding) -> the kernel's dev_t (major << 20 | minor), as tracepoints print it."""
    major = ((user_dev >> 8) & 0xFFF) | ((user_dev >> 32) & ~0xFFF)
    minor = (user_dev & 0xFF) | ((user_dev >> 12) & ~0xFF)
    return (major << 20) | minor


def read_file_index(share_dir: Path) -> dict[tuple[int, int], str]:
    """(kernel dev_t, inode) -> path of the files the workload used (empty when none were listed)."""
    text = share.read_text_or_none(share_dir / FILE_INDEX, share.LIMIT_SMALL) or ""
    out = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and len(parts[0]) < 20:
            out[(_kernel_dev(int(parts[0])), int(parts[1]))] = share.excerpt(parts[2], 512)
    return out
