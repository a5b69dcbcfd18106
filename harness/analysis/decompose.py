"""Per-step decomposition: where each step's time went, from a traced run's probes joined to the
loop's own stamps (all CLOCK_MONOTONIC).

A step runs from the signal (the world's stamp, or the timer's release) to the end of its compute.
Its parts, in us:

- irq_to_wakeup: signal -> sched_waking of the agent (the waker's syscall, or the timer interrupt
  and its handler), without what the parts below take of it;
- cstate_exit: the exit latency of the idle state the agent's CPU was in, when that exit was on
  the wake path: the CPU itself woke the agent from idle (a timer; spent before the waking), or it
  was still idle at the waking (an IPI; spent after it). The simulated driver spins exactly the
  state's exit latency before the interrupt is handled, so the table's figure is the cost;
- runqueue: sched_waking -> the loop's wake stamp (runqueue wait, the switch and the syscall's
  return), without the C-state exit and deferred work inside it;
- deferred: softirqs and work items on the CPUs of the wake path (the waker's before the waking,
  the agent's before it ran) and softirqs on the agent's CPU while it computed;
- phases: the loop's own phases (page faults, file reads, path lookups), from its stamps;
- preempted: the agent off its CPU during the compute (a hog, a neighbour, another agent);
- dvfs_deficit: the compute's busy time minus what it would have taken at fmax, from the
  frequency timeline (dvfs_ramp's power:cpu_frequency requests, in effect transition_latency_us
  later): busy - integral of f(t)/fmax over it;
- compute: the step's work at fmax: its units x the loop's calibrated cost of a unit at fmax
  (harness/workload/command.py), or the timeline's integral where no calibration exists.

Everything but `compute` tiles the step by construction; `compute` is independent (a calibration
times the work the loop did), so the parts sum to the step exactly when the frequency timeline and
the calibration agree with what the CPU did. The check is that sum / step stays within TOLERANCE
at p50. Input: the share a guest wrote (`from_share`), so the runner and `python -m harness
decompose RUN_DIR` run the same code on the same stored data.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.analysis.steps import parse_steps_csv, units_per_step
from harness.guest import platform as guest_platform
from harness.guest import protocol, share
from harness.probes import bpftrace_json, dvfs_ramp, wake_path
from harness.probes.csvout import csv_text
from harness.records import Decomposition
from harness.spec.model import UNIT_NS_AT_FMAX, WINDOW_OPTIONS, CellSpec

PARTS = ("irq_to_wakeup", "cstate_exit", "runqueue", "deferred", "phases", "preempted", "dvfs_deficit", "compute")
TOLERANCE = 0.05          # |sum / step - 1| at p50
NEEDS = ("dvfs_ramp", "wake_path")


@dataclass(frozen=True)
class PlatformFacts:
    """What the decomposition needs to know of the cell's platform and loop."""

    fmax_khz: int
    exit_ns: dict[int, int]        # cpuidle state index (as the guest numbers them) -> exit latency
    transition_ns: int
    unit_ns: float | None          # one compute unit at fmax; None: no calibration for the arch

    @classmethod
    def from_spec(cls, spec: CellSpec) -> PlatformFacts:
        p = spec.platform
        lat = {c.name: c.exit_latency_us * 1000 for c in p.sim.cstates}
        # idle=poll / nohlt bypass cpuidle: the idle loop polls, and traces it as state 0
        exit_ns = {} if p.idle_poll else {i: lat[n] for i, n in enumerate(p.cstates_on(spec.arch))}
        return cls(fmax_khz=max(o.khz for o in p.sim.opps), exit_ns=exit_ns,
                   transition_ns=p.sim.transition_latency_us * 1000, unit_ns=UNIT_NS_AT_FMAX.get(spec.arch))


@dataclass(frozen=True)
class StepParts:
    """Per measured step of the traced run: its id, its latency and its parts (ns)."""

    agent: np.ndarray
    step: np.ndarray
    step_ns: np.ndarray
    parts: dict[str, np.ndarray]
    decomposed: np.ndarray          # a run of the agent covers the wake stamp (else: parts are NaN)
    woken: np.ndarray               # the agent slept and a wakeup of it was seen on the path
    cstate: np.ndarray              # an idle exit was on the wake path

    @property
    def sum_ns(self) -> np.ndarray:
        return sum(self.parts[p] for p in PARTS)


class _Intervals:
    """Sorted, merged [start, end) intervals of one CPU, with overlap queries."""

    def __init__(self, spans: list[tuple[int, int]]):
        merged: list[list[int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.spans = merged

    def overlap(self, lo: int, hi: int) -> int:
        if hi <= lo or not self.spans:
            return 0
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        total = 0
        while i < len(self.spans) and self.spans[i][0] < hi:
            a, b = self.spans[i]
            total += max(0, min(b, hi) - max(a, lo))
            i += 1
        return total


class _Frequency:
    """f(t)/fmax per CPU: the requested frequencies, each in effect transition_ns after its request."""

    def __init__(self, changes: dict[int, list[tuple[int, int]]], initial: dict[int, int], facts: PlatformFacts):
        self.fmax = facts.fmax_khz
        self.t = {cpu: [ns + facts.transition_ns for ns, _ in ev] for cpu, ev in changes.items()}
        self.k = {cpu: [khz for _, khz in ev] for cpu, ev in changes.items()}
        self.initial = initial

    def work(self, cpu: int, lo: int, hi: int) -> float:
        """Integral of f/fmax over [lo, hi): the ns the same work would take at fmax."""
        t, k = self.t.get(cpu, []), self.k.get(cpu, [])
        i = bisect.bisect_right(t, lo)
        khz = k[i - 1] if i else self.initial.get(cpu, self.fmax)
        total, at = 0.0, lo
        while i < len(t) and t[i] < hi:
            total += (t[i] - at) * khz
            at, khz = t[i], k[i]
            i += 1
        total += (hi - at) * khz
        return total / self.fmax


def decompose(cols: dict[str, np.ndarray], runs: list[dvfs_ramp.Run], freq: dict[int, list[tuple[int, int]]],
              wp: wake_path.WakePath, cur_khz: dict[int, int], facts: PlatformFacts,
              units: np.ndarray | None) -> StepParts:
    """cols: the traced run's measured steps as the loop wrote them (ns); units: each step's
    compute (None: no calibrated work, the timeline's integral stands for it)."""
    n = len(cols["step"])
    agents = sorted(set(cols["agent"].tolist()))
    tid_agent = dict(wp.agents)
    if len(agents) == 1:   # one agent: every agent thread traced is it (one per repeat)
        tid_agent.update({r.tid: agents[0] for r in runs if r.tid not in tid_agent})
    by_agent: dict[int, list[dvfs_ramp.Run]] = {}
    for r in runs:
        if r.tid in tid_agent:
            by_agent.setdefault(tid_agent[r.tid], []).append(r)
    for v in by_agent.values():
        v.sort(key=lambda r: r.start_ns)
    starts = {a: [r.start_ns for r in v] for a, v in by_agent.items()}
    wakings: dict[int, list[tuple[int, int]]] = {}   # agent -> (ns, waker cpu)
    for tid, cpu, ns in wp.wakings:
        if tid in tid_agent:
            wakings.setdefault(tid_agent[tid], []).append((ns, cpu))
    for v in wakings.values():
        v.sort()
    wake_t = {a: [ns for ns, _ in v] for a, v in wakings.items()}
    idle = {cpu: sorted(v, key=lambda p: p[1]) for cpu, v in wp.idle.items()}
    idle_exit = {cpu: [p[1] for p in v] for cpu, v in idle.items()}
    deferred = {cpu: _Intervals(wp.softirq.get(cpu, []) + wp.work.get(cpu, []))
                for cpu in set(wp.softirq) | set(wp.work)}
    soft = {cpu: _Intervals(v) for cpu, v in wp.softirq.items()}
    none = _Intervals([])
    f = _Frequency(freq, cur_khz, facts)

    out = {p: np.full(n, np.nan) for p in PARTS}
    decomposed, woken, cstate = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    for j in range(n):
        a = int(cols["agent"][j])
        s, w, ph, d = (int(cols[k][j]) for k in ("signal_ns", "wake_ns", "phases_ns", "done_ns"))
        mine = by_agent.get(a, [])
        i = bisect.bisect_right(starts.get(a, []), w) - 1
        if i < 0 or mine[i].stop_ns < w:
            continue   # no run of the agent covers its own wake stamp: events lost
        run = mine[i]
        decomposed[j] = True
        spin_a = spin_b = defer_a = defer_b = 0
        waking = None
        if run.start_ns >= s:   # it slept after the signal: find the wakeup that ended that sleep
            k = bisect.bisect_right(wake_t.get(a, []), run.start_ns) - 1
            if k >= 0 and wakings[a][k][0] >= s:
                waking, waker = wakings[a][k]
            elif run.waking_ns is not None and run.waking_ns >= s:
                waking, waker = run.waking_ns, None
        if waking is not None:
            woken[j] = True
            cpu = run.cpu
            e = bisect.bisect_right(idle_exit.get(cpu, []), run.start_ns) - 1
            if e >= 0 and idle[cpu][e][1] >= s:
                enter, exit_, state = idle[cpu][e]
                lat = facts.exit_ns.get(state, 0)
                if waker == cpu and enter <= waking <= exit_:      # its own timer/interrupt woke it
                    spin_a = min(lat, waking - s)
                elif exit_ >= waking:                             # still idle at the waking: an IPI
                    spin_b = min(lat, run.start_ns - waking)
                cstate[j] = spin_a + spin_b > 0
            wcpu = waker if waker is not None else cpu
            defer_a = min(deferred.get(wcpu, none).overlap(s, waking), waking - s - spin_a)
            defer_b = min(deferred.get(cpu, none).overlap(waking, run.start_ns), run.start_ns - waking - spin_b)
            out["irq_to_wakeup"][j] = waking - s - spin_a - defer_a
            out["runqueue"][j] = w - waking - spin_b - defer_b
        else:   # running (or runnable) since before the signal: no wakeup on its path
            out["irq_to_wakeup"][j] = 0
            out["runqueue"][j] = w - s
        out["cstate_exit"][j] = spin_a + spin_b
        out["phases"][j] = ph - w
        # the compute: the agent's runs inside [phases, done]
        on_cpu = soft_c = 0
        timeline = 0.0
        for r in mine[max(0, i):]:
            if r.start_ns >= d:
                break
            lo, hi = max(r.start_ns, ph), min(r.stop_ns, d)
            if hi <= lo:
                continue
            seg = hi - lo
            sc = soft.get(r.cpu, none).overlap(lo, hi)
            on_cpu += seg
            soft_c += sc
            timeline += f.work(r.cpu, lo, hi) * (seg - sc) / seg
        busy = on_cpu - soft_c
        out["deferred"][j] = defer_a + defer_b + soft_c
        out["preempted"][j] = (d - ph) - on_cpu
        out["dvfs_deficit"][j] = busy - timeline
        out["compute"][j] = units[j] * facts.unit_ns if units is not None and facts.unit_ns else timeline
    return StepParts(agent=cols["agent"], step=cols["step"], step_ns=cols["done_ns"] - cols["signal_ns"], parts=out,
                     decomposed=decomposed, woken=woken, cstate=cstate)


def summarise(sp: StepParts, calibrated: bool) -> Decomposition:
    ok = sp.decomposed
    step = sp.step_ns[ok].astype(float)
    ratio = sp.sum_ns[ok] / np.where(step > 0, step, np.nan)
    ratio = ratio[np.isfinite(ratio)]
    us = {p: sp.parts[p][ok] / 1000.0 for p in PARTS}
    if not ok.any() or not len(ratio):
        return Decomposition(steps=len(sp.step), decomposed=0, woken=0, cstate_exits=0,
                             compute_source="calibration" if calibrated else "timeline", tolerance=TOLERANCE)
    p50 = float(np.percentile(ratio, 50))
    return Decomposition(
        steps=len(sp.step), decomposed=int(ok.sum()), woken=int(sp.woken.sum()), cstate_exits=int(sp.cstate.sum()),
        compute_source="calibration" if calibrated else "timeline", tolerance=TOLERANCE,
        sum_ratio_p50=p50, sum_ratio_p5=float(np.percentile(ratio, 5)), sum_ratio_p95=float(np.percentile(ratio, 95)),
        within_tolerance=abs(p50 - 1) <= TOLERANCE, step_mean_us=float(step.mean()) / 1000.0,
        step_p50_us=float(np.percentile(step, 50)) / 1000.0,
        mean_us={p: float(v.mean()) for p, v in us.items()},
        p50_us={p: float(np.percentile(v, 50)) for p, v in us.items()},
        residual_mean_us=float((step - sp.sum_ns[ok]).mean()) / 1000.0)


def to_csv(sp: StepParts) -> str:
    def us(v: float) -> str:
        return "" if not np.isfinite(v) else f"{v / 1000.0:.3f}"
    rows = ([int(sp.agent[j]), int(sp.step[j]), us(sp.step_ns[j]), *(us(sp.parts[p][j]) for p in PARTS),
             us(sp.sum_ns[j]), int(sp.woken[j]), int(sp.cstate[j])] for j in range(len(sp.step)))
    return csv_text(["agent", "step", "step_us", *(f"{p}_us" for p in PARTS), "sum_us", "woken", "cstate_exit"], rows)


# -- from what the guest wrote ----------------------------------------------------------------------

def traced_runs(spec: CellSpec, repeats: int) -> list[protocol.RunFiles]:
    """The loop runs the probes traced: their own run, or every repeat."""
    if spec.probe_run == "separate":
        return [protocol.PROBED_FILES]
    return [protocol.repeat_files(r) for r in range(repeats)]


def spec_of(dump: dict) -> CellSpec:
    """A record's spec (a full dump) validated again. An unmarked agent's dump holds the window
    options at their defaults, which the schema reads as "given" without mark_agent: left out."""
    w = dict(dump["workload"])
    if not w.get("mark_agent"):
        w = {k: v for k, v in w.items() if k not in WINDOW_OPTIONS}
    return CellSpec.model_validate({**dump, "workload": w})


def applies(spec: CellSpec) -> bool:
    return all(p in spec.probes for p in NEEDS)


def _units(spec: CellSpec, cols: dict[str, np.ndarray]) -> np.ndarray | None:
    """Each step's compute in units: the loop's column, or the fixed work and bursts of the spec."""
    return units_per_step(spec.workload, cols["step"], cols.get("units"))


def from_share(share_dir: Path, spec: CellSpec, repeats: int, probe_limit: int) -> tuple[StepParts, Decomposition]:
    """The decomposition of a cell from its share: the traced run's steps file and platform snapshot,
    and the raw output of dvfs_ramp and wake_path. Raises ValueError on unusable input."""
    runs = traced_runs(spec, repeats)
    parts = []
    for r, f in enumerate(runs):
        w = spec.workload
        limit = min(share.LIMIT_STEPS, (w.steps + w.warmup) * w.agents * 240 + 4096)
        parts.append(parse_steps_csv(share.read_text(share_dir / f.steps, limit), f.steps, r))
    keys = set.intersection(*(set(p) for p in parts))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    before = guest_platform.parse_snapshot(share.read_text(share_dir / runs[0].before, share.LIMIT_SMALL),
                                           runs[0].before)
    outs = {}
    for name in NEEDS:
        fname = protocol.probe_output(name)
        outs[name] = bpftrace_json.parse(share.read_text(share_dir / fname, probe_limit), fname)
    facts = PlatformFacts.from_spec(spec)
    units = _units(spec, cols)
    sp = decompose(cols, dvfs_ramp.records(outs["dvfs_ramp"]), dvfs_ramp.frequency_changes(outs["dvfs_ramp"]),
                   wake_path.records(outs["wake_path"]), before.cur_khz, facts, units)
    return sp, summarise(sp, calibrated=units is not None and facts.unit_ns is not None)
