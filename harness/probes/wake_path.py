"""Tool 7: what an agent's wakeup crosses: the idle period its CPU left before each run of it
(power:cpu_idle, with the state), softirqs and work items on every CPU (their execution
intervals), the agent's wakings with the waker's CPU, and the agent threads' names. The
per-step decomposition (harness/analysis/decompose.py) joins these to the loop's stamps and
dvfs_ramp's runs. Idle periods are kept in kernel maps and printed with the run they precede: a
line per idle transition would wake bpftrace, which idles again, and feed itself (a first version
did: 40000 idle periods in a 1.3 s run, and the traced steps 54 % slower)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, ProbeContext, agent_of
from harness.probes.csvout import csv_text

TEMPLATE = "wake_path.bt.j2"
DESCRIPTION = ("the idle period each run of an agent followed, softirqs and work items on every CPU, agent wakings "
               "with the waker's CPU (for the per-step decomposition)")
TRACEPOINTS = ("power:cpu_idle", "irq:softirq_entry", "irq:softirq_exit", "workqueue:workqueue_execute_start",
               "workqueue:workqueue_execute_end", "sched:sched_waking", "sched:sched_switch")

Interval = tuple[int, int]   # (start ns, end ns)


@dataclass
class WakePath:
    idle: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)   # cpu -> (enter, exit, state)
    softirq: dict[int, list[Interval]] = field(default_factory=dict)            # cpu -> run intervals
    work: dict[int, list[Interval]] = field(default_factory=dict)
    wakings: list[tuple[int, int, int]] = field(default_factory=list)           # (tid, waker cpu, ns), in time order
    agents: dict[int, int] = field(default_factory=dict)                        # tid -> agent index


_TIME = {"R": 3, "Q": 2, "q": 2, "S": 2, "E": 2, "W": 3}


def _key(line: str) -> int:
    p = line.split()
    if not p or (p[0] != "T" and p[0] not in _TIME):
        raise ProbeOutputError(f"wake_path: unexpected line {line!r}")
    if p[0] == "T":
        return -1
    try:
        return int(p[_TIME[p[0]]])
    except (IndexError, ValueError):
        raise ProbeOutputError(f"wake_path: unexpected line {line!r}") from None


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> WakePath:
    """Pair entries with exits per CPU (bpftrace drains one buffer per CPU: merged by time first).
    An exit without its entry (the probe attached mid-interval) and an entry never left are dropped;
    an idle period is kept once however many runs it preceded."""
    wp = WakePath()
    seen_idle: set[tuple[int, int]] = set()
    open_soft: dict[int, int] = {}
    open_work: dict[int, int] = {}
    idle, soft, work = defaultdict(list), defaultdict(list), defaultdict(list)
    for line in sorted(out.printf, key=_key):
        p = line.split()
        kind = p[0]
        try:
            if kind == "T":
                if len(p) != 3:
                    raise ValueError(kind)
                agent = agent_of(p[2])
                if agent is not None:
                    wp.agents[int(p[1])] = agent
                continue
            vals = [int(x) for x in p[1:]]
            if kind == "R" and len(vals) == 6:
                _tid, cpu, _ns, enter, exit_, state = vals
                if 0 < enter <= exit_ and (cpu, exit_) not in seen_idle:
                    seen_idle.add((cpu, exit_))
                    idle[cpu].append((enter, exit_, state))
            elif kind == "Q" and len(vals) == 3:
                open_soft[vals[0]] = vals[1]
            elif kind == "q" and len(vals) == 3:
                if (t := open_soft.pop(vals[0], None)) is not None:
                    soft[vals[0]].append((t, vals[1]))
            elif kind == "S" and len(vals) == 2:
                open_work[vals[0]] = vals[1]
            elif kind == "E" and len(vals) == 2:
                if (t := open_work.pop(vals[0], None)) is not None:
                    work[vals[0]].append((t, vals[1]))
            elif kind == "W" and len(vals) == 3:
                wp.wakings.append((vals[0], vals[1], vals[2]))
            else:
                raise ValueError(kind)
        except ValueError:
            raise ProbeOutputError(f"wake_path: unexpected line {line!r}") from None
    wp.idle, wp.softirq, wp.work = dict(idle), dict(soft), dict(work)
    return wp


def summary(wp: WakePath, ctx: ProbeContext = NO_CONTEXT) -> dict:
    states: dict[int, int] = defaultdict(int)
    for periods in wp.idle.values():
        for _, _, st in periods:
            states[st] += 1
    return {"idle_periods": sum(len(v) for v in wp.idle.values()),
            "idle_periods_by_state": {str(k): v for k, v in sorted(states.items())},
            "softirqs": sum(len(v) for v in wp.softirq.values()),
            "softirq_us": sum(e - s for v in wp.softirq.values() for s, e in v) / 1000.0,
            "work_items": sum(len(v) for v in wp.work.values()),
            "agent_wakings": len(wp.wakings), "agent_threads": len(wp.agents)}


def to_csv(wp: WakePath) -> str:
    rows = [("idle", cpu, a, b, st) for cpu, v in wp.idle.items() for a, b, st in v]
    rows += [("softirq", cpu, a, b, None) for cpu, v in wp.softirq.items() for a, b in v]
    rows += [("work", cpu, a, b, None) for cpu, v in wp.work.items() for a, b in v]
    rows += [("waking", cpu, ns, None, tid) for tid, cpu, ns in wp.wakings]
    rows.sort(key=lambda r: r[2])
    rows += [("thread", None, None, None, f"{tid}:agent-{a}") for tid, a in sorted(wp.agents.items())]
    return csv_text(("kind", "cpu", "start_ns", "end_ns", "value"), rows)
