"""Tool 2: DVFS ramp after an agent wakeup (sched_waking, sched_switch, power:cpu_frequency).

The script only reports events; pairing them is done here, so the kernel side stays cheap. One
record per run of an agent thread: from the wakeup that started it to the switch that ended it,
with the frequency its CPU had when it started, the highest it reached, the time-weighted mean
(the frequency the compute ran at) and how long after the wakeup the CPU got to that highest one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, ProbeContext
from harness.probes.csvout import csv_text

TEMPLATE = "dvfs_ramp.bt.j2"
DESCRIPTION = "frequency of the agent's CPU from its wakeup to the end of its run: start, ramp time, mean"
TRACEPOINTS = ("power:cpu_frequency", "sched:sched_waking", "sched:sched_switch")


@dataclass(frozen=True)
class Run:
    tid: int
    cpu: int
    waking_ns: int | None      # None: the run did not follow a wakeup (preempted and resumed)
    start_ns: int
    stop_ns: int
    start_khz: int | None      # frequency at the run's start; None: none seen on that CPU yet
    max_khz: int | None
    mean_khz: float | None
    changes: int               # power:cpu_frequency events on the CPU from the wakeup to the run's end
    ramp_ns: int | None        # wakeup (or run start) -> the CPU reaches max_khz; 0 when it started there
    khz_before: int | None = None   # the frequency last requested before the wakeup (None: none seen)


def _ramp(start: int, wake: int | None, khz_origin: int | None, freq: list[tuple[int, int]], stop: int):
    """khz_origin: the CPU's frequency at the wakeup (or run start); freq: (ns, khz) changes on the
    CPU after that and before the run's end. Returns (khz at run start, top, time-weighted mean,
    time from the wakeup to the top)."""
    origin = wake if wake is not None else start
    at_start = ([khz_origin] if khz_origin else []) + [k for t, k in freq if t <= start]
    khz0 = at_start[-1] if at_start else None
    levels = ([(start, khz0)] if khz0 else []) + [(t, k) for t, k in freq if t > start]
    if not levels:
        return khz0, None, None, None
    top = max(k for _, k in levels)
    if khz_origin == top:
        ramp = 0
    else:
        ramp = next(t for t, k in freq if k == top) - origin
    total = weighted = 0.0
    for (t, k), nxt in zip(levels, [t for t, _ in levels[1:]] + [stop], strict=True):
        span = max(0, nxt - t)
        total += span
        weighted += span * k
    mean = weighted / total if total else float(levels[-1][1])
    return khz0, top, mean, ramp


_TIME_FIELD = {"F": 2, "W": 2, "R": 3, "S": 3}


def _in_time_order(lines: list[str]) -> list[str]:
    """bpftrace drains one perf buffer per CPU, so events of different CPUs arrive out of order."""
    def key(line: str) -> int:
        p = line.split()
        try:
            return int(p[_TIME_FIELD[p[0]]])
        except (KeyError, IndexError, ValueError):
            raise ProbeOutputError(f"dvfs_ramp: unexpected line {line!r}") from None
    return sorted(lines, key=key)


def _frequency_changes(lines: list[str]) -> dict[int, list[tuple[int, int]]]:
    freq: dict[int, list[tuple[int, int]]] = {}
    for line in lines:
        p = line.split()
        if p[0] == "F":
            try:
                cpu, ns, khz = (int(x) for x in p[1:])
            except ValueError:
                raise ProbeOutputError(f"dvfs_ramp: unexpected line {line!r}") from None
            freq.setdefault(cpu, []).append((ns, khz))
    return freq


def frequency_changes(out: BpftraceOutput) -> dict[int, list[tuple[int, int]]]:
    """cpu -> (ns, kHz) of every power:cpu_frequency event, in time order. The cpufreq core emits
    it when the governor's request is made (the fast-switch path), so this is the requested
    frequency; sim-cpufreq applies it transition_latency_us later."""
    return _frequency_changes(_in_time_order(out.printf))


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> list[Run]:
    """ctx.cur_khz: cpu -> frequency before the probe attached (the harness's platform snapshot),
    for CPUs whose governor never changes it while the probe runs."""
    lines = _in_time_order(out.printf)
    freq = _frequency_changes(lines)                       # cpu -> every change, in time order
    times = {cpu: [t for t, _ in ev] for cpu, ev in freq.items()}
    initial = dict(ctx.cur_khz)

    def khz_at(cpu: int, ns: int) -> int | None:
        i = bisect.bisect_right(times.get(cpu, []), ns)
        return freq[cpu][i - 1][1] if i else initial.get(cpu)

    def changes(cpu: int, lo: int, hi: int) -> list[tuple[int, int]]:
        t = times.get(cpu, [])
        return freq[cpu][bisect.bisect_right(t, lo):bisect.bisect_left(t, hi)] if t else []

    runs: list[Run] = []
    waking: dict[int, int] = {}
    open_runs: dict[int, tuple[int, int, int | None, int]] = {}   # tid -> (cpu, start, wake, khz seen)
    for line in lines:
        p = line.split()
        try:
            kind, vals = p[0], [int(x) for x in p[1:]]
            if kind == "F":
                continue
            if kind == "W":
                tid, ns = vals
                waking[tid] = ns
            elif kind == "R":
                tid, cpu, ns, khz = vals
                open_runs[tid] = (cpu, ns, waking.pop(tid, None), khz)
            elif kind == "S":
                tid, cpu, ns = vals
                if tid not in open_runs:
                    continue   # it was running when the probe attached
                rcpu, start, wake, seen = open_runs.pop(tid)
                origin = wake if wake is not None else start
                ch = changes(rcpu, origin, ns)
                khz0, top, mean, ramp = _ramp(start, wake, khz_at(rcpu, origin) or seen or None, ch, ns)
                runs.append(Run(tid, rcpu, wake, start, ns, khz0, top, mean, len(ch), ramp,
                                khz_at(rcpu, origin)))
            else:
                raise ValueError(kind)
        except (ValueError, IndexError):
            raise ProbeOutputError(f"dvfs_ramp: unexpected line {line!r}") from None
    return runs


def summary(recs: list[Run], ctx: ProbeContext = NO_CONTEXT) -> dict[str, float]:
    woken = [r for r in recs if r.waking_ns is not None]
    if not woken:
        return {"runs": 0}
    known = [r for r in woken if r.max_khz is not None]
    ramps = np.array([r.ramp_ns for r in known if r.ramp_ns], dtype=float) / 1000.0
    out = {"runs": len(woken), "runs_with_freq_change": sum(r.changes > 0 for r in woken),
           "freq_changes": sum(r.changes for r in woken)}
    if known:
        fmax = max(r.max_khz for r in known)
        out.update({"mean_khz": float(np.mean([r.mean_khz for r in known])),
                    "start_below_top_fraction": float(np.mean([(r.start_khz or 0) < fmax for r in known])),
                    "ramped_fraction": float(np.mean([bool(r.ramp_ns) for r in known]))})
    if len(ramps):
        out.update({"ramp_p50_us": float(np.percentile(ramps, 50)), "ramp_p99_us": float(np.percentile(ramps, 99))})
    return out


def to_csv(recs: list[Run]) -> str:
    def f(v):
        return "" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))
    head = "tid,cpu,waking_ns,start_ns,stop_ns,start_khz,max_khz,mean_khz,changes,ramp_ns,khz_before"
    return csv_text(head.split(","),
                    ([f(v) for v in (r.tid, r.cpu, r.waking_ns, r.start_ns, r.stop_ns, r.start_khz, r.max_khz,
                                     r.mean_khz, r.changes, r.ramp_ns, r.khz_before)] for r in recs))
