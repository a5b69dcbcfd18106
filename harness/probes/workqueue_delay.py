"""Tool 3: workqueue execution delay (workqueue:workqueue_queue_work/execute_start/execute_end).

One record per work item: queued -> started -> returned, with its function, workqueue and CPUs,
and whether it sits on the agent's wake path: its worker woke the agent (the wakeup waited for
it), or it ran on the CPU a woken agent was waiting to run on (the wakeup waited behind it). The
script decides the latter in the kernel, so it prints a line per work item, never one per step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, OUTSIDE, ProbeContext
from harness.probes.csvout import csv_text

TEMPLATE = "workqueue_delay.bt.j2"
DESCRIPTION = "work items: queue -> start -> end delay per function, and the ones on the agent's wake path"
TRACEPOINTS = ("workqueue:workqueue_queue_work", "workqueue:workqueue_execute_start",
               "workqueue:workqueue_execute_end", "sched:sched_waking", "sched:sched_wakeup", "sched:sched_switch")
OUTPUTS = ("events", "summary")


@dataclass(frozen=True)
class WorkItem:
    work: int
    function: str
    workqueue: str | None     # None: queued before the probe attached
    queue_cpu: int | None
    target_cpu: int | None    # the pool's CPU; -1 = unbound
    exec_cpu: int
    queue_ns: int | None
    start_ns: int
    end_ns: int | None        # None: still running when the probe stopped
    woke_agent: bool          # its worker woke an agent thread
    delayed_agent: bool       # it ran on an agent's CPU between that agent's wakeup and running
    phase: str                # loop phase when it started (context.PHASES, or "outside")

    @property
    def delay_ns(self) -> int | None:
        return None if self.queue_ns is None else self.start_ns - self.queue_ns

    @property
    def runtime_ns(self) -> int | None:
        return None if self.end_ns is None else self.end_ns - self.start_ns

    @property
    def on_wake_path(self) -> bool:
        return self.woke_agent or self.delayed_agent


def _ints(vals: list[str], line: str) -> list[int]:
    try:
        return [int(v) for v in vals]
    except ValueError:
        raise ProbeOutputError(f"workqueue_delay: unexpected line {line!r}") from None


def _time(line: str) -> int:
    p = line.split()
    if len(p) < 3 or p[0] not in "QSEKD":
        raise ProbeOutputError(f"workqueue_delay: unexpected line {line!r}")
    return _ints([p[2]], line)[0]


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> list[WorkItem]:
    lines = sorted(out.printf, key=_time)   # one perf buffer per CPU: merge by time
    queued: dict[int, tuple[int, int, int, str]] = {}       # work -> (ns, cpu, target, workqueue)
    running: dict[int, dict] = {}                            # work -> the started item
    ended: dict[int, dict] = {}                              # work -> the item that just returned (for D)
    items: list[dict] = []
    for line in lines:
        p = line.split()
        kind = p[0]
        if kind == "Q" and len(p) >= 6:
            work, ns, cpu, target = _ints(p[1:5], line)
            queued[work] = (ns, cpu, target, p[6] if len(p) > 6 else "")
        elif kind == "S" and len(p) == 5:
            work, ns, cpu = _ints(p[1:4], line)
            q = queued.pop(work, None)
            item = {"work": work, "function": p[4], "workqueue": q[3] if q else None, "queue_cpu": q[1] if q else None,
                    "target_cpu": q[2] if q else None, "exec_cpu": cpu, "queue_ns": q[0] if q else None,
                    "start_ns": ns, "end_ns": None, "woke_agent": False, "delayed_agent": False}
            running[work] = item
            items.append(item)
        elif kind == "E" and len(p) == 4:
            work, ns, _cpu = _ints(p[1:4], line)
            if work in running:               # popped: a later E without its S must not stretch this item
                item = running.pop(work)
                item["end_ns"] = ns
                ended[work] = item
        elif kind == "K" and len(p) == 4:          # the running item's worker woke an agent thread
            work, _ns, _tid = _ints(p[1:4], line)
            if work in running:
                running[work]["woke_agent"] = True
        elif kind == "D" and len(p) == 4:          # it returned while a woken agent waited on its CPU
            work, _ns, _cpu = _ints(p[1:4], line)
            if work in ended:
                ended.pop(work)["delayed_agent"] = True
        else:
            raise ProbeOutputError(f"workqueue_delay: unexpected line {line!r}")
    loop = ctx.loop
    return [WorkItem(**it, phase=loop.phase_at(it["start_ns"]) if loop is not None else OUTSIDE) for it in items]


def summary(recs: list[WorkItem], ctx: ProbeContext = NO_CONTEXT) -> dict:
    if not recs:
        return {"items": 0}
    delays = np.array([r.delay_ns for r in recs if r.delay_ns is not None], dtype=float) / 1000.0
    runtimes = np.array([r.runtime_ns for r in recs if r.runtime_ns is not None], dtype=float) / 1000.0
    per_fn: dict[str, list[WorkItem]] = defaultdict(list)
    for r in recs:
        per_fn[r.function].append(r)
    top = sorted(per_fn.items(), key=lambda kv: -len(kv[1]))[:10]
    on_path = [r for r in recs if r.on_wake_path]
    out = {"items": len(recs), "functions": len(per_fn),
           "on_wake_path": len(on_path), "woke_agent": sum(r.woke_agent for r in recs),
           "delayed_agent": sum(r.delayed_agent for r in recs),
           "wake_path_functions": sorted({r.function for r in on_path}),
           "by_phase": {ph: n for ph, n in sorted(_count(r.phase for r in recs).items())},
           "top_functions": [{"function": fn, "items": len(v), **_pcts([x.delay_ns for x in v], "delay"),
                              **_pcts([x.runtime_ns for x in v], "runtime")} for fn, v in top]}
    if len(delays):
        out.update({"delay_p50_us": float(np.percentile(delays, 50)), "delay_p99_us": float(np.percentile(delays, 99))})
    if len(runtimes):
        out.update({"runtime_p50_us": float(np.percentile(runtimes, 50)),
                    "runtime_p99_us": float(np.percentile(runtimes, 99))})
    return out


def _count(it) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in it:
        out[x] += 1
    return out


def _pcts(ns: list[int | None], name: str) -> dict[str, float]:
    v = np.array([x for x in ns if x is not None], dtype=float) / 1000.0
    return {f"{name}_p50_us": float(np.percentile(v, 50)), f"{name}_max_us": float(v.max())} if len(v) else {}


def to_csv(recs: list[WorkItem]) -> str:
    head = ("work,function,workqueue,queue_cpu,target_cpu,exec_cpu,queue_ns,start_ns,end_ns,delay_ns,runtime_ns,"
            "woke_agent,delayed_agent,phase").split(",")
    return csv_text(head, ((hex(r.work), r.function, r.workqueue, r.queue_cpu, r.target_cpu, r.exec_cpu, r.queue_ns,
                            r.start_ns, r.end_ns, r.delay_ns, r.runtime_ns, r.woke_agent, r.delayed_agent, r.phase)
                           for r in recs))
