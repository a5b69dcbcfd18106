"""agentloop's command line: one cell's workload spec -> the argv of one run of the loop.

The guest script (harness/guest/protocol.py) runs this once per repeat; where the loop writes and
where it finds its inputs in the guest are the protocol's to say, so they are passed in.
"""

from __future__ import annotations

from harness.guest import scratch
from harness.spec.model import COMPUTE_UNITS_MAX, UNIT_NS_AT_FMAX, WorkloadSpec


def step_cycles(w: WorkloadSpec, arch: str, fmax_khz: int) -> float | None:
    """The compute a step asks for, in cycles of the simulated CPU (None: no figure for this arch)."""
    unit = UNIT_NS_AT_FMAX.get(arch)
    if unit is None or w.burst_every or w.compute is not None:   # the work differs from step to step
        return None
    return w.compute_units * unit * fmax_khz / 1e6


def workdir(w: WorkloadSpec) -> str:
    return scratch.MOUNT if w.phases.disk_mb else "/tmp"


def workload_args(w: WorkloadSpec, repeat: int, out: str, binary: str, wait_file: str | None = None,
                  compute_file: str | None = None) -> list[str]:
    """agentloop's command line for one repeat (seeds differ per repeat, reproducibly)."""
    args = [binary, "--steps", str(w.steps), "--warmup", str(w.warmup),
            "--agents", str(w.agents), "--compute-units", str(w.compute_units),
            "--wait", w.wait.kind, "--dist", w.wait.distribution, "--wait-us", repr(w.wait.us),
            "--seed", str(w.seed + repeat), "--out", out, "--workdir", workdir(w)]
    args += _agent_workload_args(w, compute_file)
    if w.burst_every:
        args += ["--burst-every", str(w.burst_every), "--burst-units", str(w.burst_units)]
    if w.wait.min_us is not None:
        args += ["--min-us", repr(w.wait.min_us)]
    if w.wait.max_us is not None:
        args += ["--max-us", repr(w.wait.max_us)]
    if w.wait.file:   # the runner copies the file into the share
        if wait_file is None:
            raise ValueError("workload.wait.file is set: the guest path of the wait-time file is needed")
        args += ["--wait-file", wait_file]
    p = w.phases
    for flag, value in (("--touch-pages", p.touch_pages), ("--read-kb", p.read_kb),
                        ("--drop-cache-every", p.drop_cache_every), ("--path-depth", p.path_depth)):
        if value:
            args += [flag, str(value)]
    if p.path_misses:
        args.append("--path-miss")
    if w.mark_agent:
        args.append("--mark-agent")
        for flag, value in (("--window-us", w.window_us), ("--target-us", w.window_target_us),
                            ("--tolerance-us", w.window_tolerance_us), ("--guard-us", w.window_guard_us)):
            args += [flag, str(value)]
    if w.explicit_windows:
        args.append("--explicit-windows")
    if w.agent_cpu is not None:
        args += ["--agent-cpu", str(w.agent_cpu)]
    if w.world_cpu is not None:
        args += ["--world-cpu", str(w.world_cpu)]
    if w.inject_delay_us:
        args += ["--inject-delay-us", str(w.inject_delay_us)]
    if w.slice_us:
        args += ["--slice-us", str(w.slice_us)]
    if w.hogs:
        args += ["--hogs", str(w.hogs)]
    if w.adpf_target_us:
        args += ["--adpf-target-us", str(w.adpf_target_us)]
    if w.hog_cpu is not None:
        args += ["--hog-cpu", str(w.hog_cpu)]
    return args


def _agent_workload_args(w: WorkloadSpec, compute_file: str | None) -> list[str]:
    """The agent-workload options (per-step compute distribution, periodic deadline, fan-out); none
    of them for a workload that uses none, so its command line is what it always was."""
    args: list[str] = []
    c = w.compute
    if c is not None:
        args += ["--compute-dist", c.distribution]
        if c.distribution == "uniform":
            args += ["--compute-min-units", str(c.min_units), "--compute-max-units", str(c.max_units)]
        elif c.distribution == "lognormal":
            mu, sigma = c.lognormal()
            args += ["--compute-mu", repr(mu), "--compute-sigma", repr(sigma),
                     "--compute-max-units", str(c.max_units if c.max_units is not None else COMPUTE_UNITS_MAX)]
        else:   # the runner copies the file into the share
            if compute_file is None:
                raise ValueError("workload.compute.file is set: the guest path of the compute file is needed")
            args += ["--compute-file", compute_file]
    if w.wait.period_us is not None:
        args += ["--period-us", str(w.wait.period_us)]
    if w.fanout:
        args.append("--fanout")
    if w.noise_busy_us:
        args += ["--noise-busy-us", str(w.noise_busy_us), "--noise-idle-us", str(w.noise_idle_us)]
    return args
