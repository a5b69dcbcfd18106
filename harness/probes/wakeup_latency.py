"""Tool 1: wakeup-to-run latency of the agent threads (sched_waking -> sched_switch in)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, ProbeContext
from harness.probes.csvout import csv_text

TEMPLATE = "wakeup_latency.bt.j2"
DESCRIPTION = "wakeup-to-run latency of the agent threads, per wakeup, with CPU and whether it was idle"
TRACEPOINTS = ("sched:sched_waking", "sched:sched_switch")


@dataclass(frozen=True)
class Wakeup:
    tid: int
    cpu: int
    waking_ns: int
    running_ns: int
    cpu_was_idle: bool

    @property
    def latency_ns(self) -> int:
        return self.running_ns - self.waking_ns


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> list[Wakeup]:
    recs = []
    for line in out.printf:
        parts = line.split()
        if len(parts) != 5:
            raise ProbeOutputError(f"wakeup_latency: unexpected line {line!r}")
        tid, cpu, waking, running, idle = (int(x) for x in parts)
        recs.append(Wakeup(tid, cpu, waking, running, bool(idle)))
    return recs


@dataclass(frozen=True)
class Agreement:
    """Probe vs loop, step by step: the loop's signal -> running (its own CLOCK_MONOTONIC stamps)
    against the kernel's sched_waking -> sched_switch-in for the wakeup inside that interval."""

    steps: int
    matched: int
    loop_us: np.ndarray       # per matched step
    probe_us: np.ndarray

    @property
    def excess_us(self) -> np.ndarray:
        """What the loop sees beyond the kernel's wakeup-to-run: futex/syscall entry and return."""
        return self.loop_us - self.probe_us


def agree(recs: list[Wakeup], signal_ns, wake_ns) -> Agreement:
    """Match each step (signal_ns, wake_ns arrays) to the probe's wakeup whose sched_waking lies
    between the loop's signal and its wakeup stamp."""
    waking = np.array(sorted(r.waking_ns for r in recs), dtype=np.int64)
    by_waking = {r.waking_ns: r for r in recs}
    loop, probe = [], []
    for s, w in zip(signal_ns, wake_ns, strict=True):
        i = np.searchsorted(waking, s)
        if i < len(waking) and waking[i] <= w:
            r = by_waking[int(waking[i])]
            loop.append((w - s) / 1000.0)
            probe.append(r.latency_ns / 1000.0)
    return Agreement(len(signal_ns), len(loop), np.array(loop), np.array(probe))


def summary(recs: list[Wakeup], ctx: ProbeContext = NO_CONTEXT) -> dict[str, float]:
    """With the loop's timeline: how the probe's figures agree with the loop's, step by step."""
    if not recs:
        return {"events": 0}
    lat = np.array([r.latency_ns for r in recs], dtype=float) / 1000.0
    out = {"events": len(recs), "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
           "idle_cpu_fraction": float(np.mean([r.cpu_was_idle for r in recs]))}
    if ctx.loop is not None:
        a = agree(recs, ctx.loop.signal_ns, ctx.loop.wake_ns)
        out.update({"matched_steps": a.matched, "measured_steps": a.steps,
                    "loop_minus_probe_p50_us": float(np.percentile(a.excess_us, 50)) if a.matched else None,
                    "loop_minus_probe_p99_us": float(np.percentile(a.excess_us, 99)) if a.matched else None})
    return out


def to_csv(recs: list[Wakeup]) -> str:
    return csv_text("tid,cpu,waking_ns,running_ns,latency_ns,cpu_was_idle".split(","),
                    ((r.tid, r.cpu, r.waking_ns, r.running_ns, r.latency_ns, r.cpu_was_idle) for r in recs))
