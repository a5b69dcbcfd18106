"""The script the guest runs: record boot progress, run the agent loop `repeats` times, record exits.

Rendered from a jinja2 template into the cell's results directory (seen as /mnt in the guest).
Later stages add platform knobs and probes around the loop through `setup` and `teardown`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2

from harness.guest import platform, scratch
from harness.guest.vm import GUEST_RESULTS, GUEST_TOOLS, STATUS_FILE
from harness.spec.model import WorkloadSpec

WAIT_FILE = "wait-times.txt"
PROBED_STEPS = "steps-probed.csv"   # the run the probes attach to, when they get a run of their own
FILE_INDEX = "files.txt"   # device, inode and path of the workload's files, for probes that see inodes

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def workdir(w: WorkloadSpec) -> str:
    return scratch.MOUNT if w.phases.disk_mb else "/tmp"


def workload_args(w: WorkloadSpec, repeat: int, out: str) -> list[str]:
    """agentloop's command line for one repeat (seeds differ per repeat, reproducibly)."""
    args = [f"{GUEST_TOOLS}/agentloop", "--steps", str(w.steps), "--warmup", str(w.warmup),
            "--agents", str(w.agents), "--compute-units", str(w.compute_units),
            "--wait", w.wait.kind, "--dist", w.wait.distribution, "--wait-us", repr(w.wait.us),
            "--seed", str(w.seed + repeat), "--out", out, "--workdir", workdir(w)]
    if w.burst_every:
        args += ["--burst-every", str(w.burst_every), "--burst-units", str(w.burst_units)]
    if w.wait.min_us is not None:
        args += ["--min-us", repr(w.wait.min_us)]
    if w.wait.max_us is not None:
        args += ["--max-us", repr(w.wait.max_us)]
    if w.wait.file:   # the runner copies the file into the cell's results directory
        args += ["--wait-file", f"{GUEST_RESULTS}/{WAIT_FILE}"]
    p = w.phases
    for flag, value in (("--touch-pages", p.touch_pages), ("--read-kb", p.read_kb),
                        ("--drop-cache-every", p.drop_cache_every), ("--path-depth", p.path_depth)):
        if value:
            args += [flag, str(value)]
    if p.path_misses:
        args.append("--path-miss")
    if w.mark_agent:
        args.append("--mark-agent")
    for flag, value in (("--window-us", w.window_us), ("--tolerance-us", w.window_tolerance_us),
                        ("--guard-us", w.window_guard_us)):
        if value:
            args += [flag, str(value)]
    if w.explicit_windows:
        args.append("--explicit-windows")
    if w.agent_cpu is not None:
        args += ["--agent-cpu", str(w.agent_cpu)]
    if w.world_cpu is not None:
        args += ["--world-cpu", str(w.world_cpu)]
    if w.inject_delay_us:
        args += ["--inject-delay-us", str(w.inject_delay_us)]
    return args


PROBES_DIR = "probes"


def probe_paths(name: str) -> dict[str, str]:
    """Where a probe's script, output and stderr live, as the guest sees them. bpftrace writes to
    the guest's tmpfs, copied to the results when it stops: a write per event over 9p would show
    up in the loop's timings and in the workqueue tool's records."""
    return {"name": name, "script": f"{GUEST_RESULTS}/{PROBES_DIR}/{name}.bt",
            "out": f"/tmp/probe-{name}.json", "result": f"{GUEST_RESULTS}/probe-{name}.json",
            "err": f"{GUEST_RESULTS}/probe-{name}.err"}


def probe_cpus(w: WorkloadSpec, cpus: int) -> str | None:
    """Where bpftrace runs: off the agent's CPU when the agent is pinned, so draining the probes'
    buffers neither takes the agent's CPU nor wakes it from idle. None: anywhere."""
    if w.agent_cpu is None or cpus < 2:
        return None
    return ",".join(str(c) for c in range(cpus) if c != w.agent_cpu)


def render(w: WorkloadSpec, repeats: int, setup: list[str] = (), teardown: list[str] = (),
           extra_args: list[str] = (), probes: list[str] = (), attach_timeout_s: int = 120,
           probe_run: str = "separate", cpus: int = 1) -> str:
    """probe_run "separate": the repeats run untraced, then the probes attach for one more run with
    repeat 0's seed (steps-probed.csv), so the cell's figures never carry the observer's cost and
    that run against repeat 0 is the probes' overhead. "in-repeats": the probes trace every repeat."""
    runs = []
    for r in range(repeats):
        args = workload_args(w, r, f"{GUEST_RESULTS}/steps-r{r}.csv") + list(extra_args)
        runs.append({"index": r, "cmd": shlex.join(args)})
    probed_cmd = None
    if probes and probe_run == "separate":
        probed_cmd = shlex.join(workload_args(w, 0, f"{GUEST_RESULTS}/{PROBED_STEPS}") + list(extra_args))
    if w.phases.disk_mb:
        setup = [scratch.guest_mount_command(), *setup]
    return _ENV.get_template("run.sh.j2").render(status=f"{GUEST_RESULTS}/{STATUS_FILE}", results=GUEST_RESULTS,
                                                 runs=runs, setup=list(setup), teardown=list(teardown),
                                                 workdir=workdir(w), file_index=f"{GUEST_RESULTS}/{FILE_INDEX}",
                                                 probe_cpus=probe_cpus(w, cpus),
                                                 probes=[probe_paths(p) for p in probes],
                                                 attach_timeout_ds=attach_timeout_s * 10, cpu=platform.CPU,
                                                 probed_cmd=probed_cmd)


def _kernel_dev(user_dev: int) -> int:
    """stat's st_dev (glibc's encoding) -> the kernel's dev_t (major << 20 | minor), as tracepoints print it."""
    major = ((user_dev >> 8) & 0xFFF) | ((user_dev >> 32) & ~0xFFF)
    minor = (user_dev & 0xFF) | ((user_dev >> 12) & ~0xFF)
    return (major << 20) | minor


def read_file_index(results_dir: Path) -> dict[tuple[int, int], str]:
    """(kernel dev_t, inode) -> path of the files the workload used (empty when none were listed)."""
    path = results_dir / FILE_INDEX
    out = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                out[(_kernel_dev(int(parts[0])), int(parts[1]))] = parts[2]
    return out
