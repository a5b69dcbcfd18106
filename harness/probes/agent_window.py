"""Tool 6: the agent latency window's trace events (window open/close, boost, idle guard,
placement, preemption). Needs a CONFIG_AGENT_LATENCY=y kernel: elsewhere it fails to attach,
naming the missing tracepoint."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, ProbeContext
from harness.probes.csvout import csv_text

TEMPLATE = "agent_window.bt.j2"
DESCRIPTION = "agent latency window events: windows, frequency boosts, idle guards, placements, preemptions"
TRACEPOINTS = tuple(f"agent_latency:agent_{e}" for e in
                    ("window_open", "window_close", "freq_boost", "idle_guard", "wake_place", "wake_preempt"))


@dataclass
class WindowEvents:
    opens: list[tuple[int, int, int, int, bool]] = field(default_factory=list)   # pid cpu ns window_us explicit
    closes: list[tuple[int, int, int, int]] = field(default_factory=list)        # pid cpu ns open_ns
    placements: int = 0
    preemptions: int = 0
    boosts: dict[int, int] = field(default_factory=dict)                         # cpu -> count
    guards: dict[int, int] = field(default_factory=dict)
    placed: list[tuple[int, int, int]] = field(default_factory=list)                # pid cpu ns
    preempted: list[tuple[int, int, int, int]] = field(default_factory=list)        # pid preempted_pid cpu ns


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> WindowEvents:
    ev = WindowEvents()
    for line in out.printf:
        p = line.split()
        try:
            kind, vals = p[0], [int(x) for x in p[1:]]
            if kind == "O":
                pid, cpu, ns, us, explicit = vals
                ev.opens.append((pid, cpu, ns, us, bool(explicit)))
            elif kind == "C":
                pid, cpu, ns, open_ns = vals
                ev.closes.append((pid, cpu, ns, open_ns))
            elif kind == "P" and len(vals) == 3:
                ev.placements += 1
                ev.placed.append((vals[0], vals[1], vals[2]))
            elif kind == "E" and len(vals) == 4:
                ev.preemptions += 1
                ev.preempted.append((vals[0], vals[1], vals[2], vals[3]))
            else:
                raise ValueError(kind)
        except (ValueError, IndexError):
            raise ProbeOutputError(f"agent_window: unexpected line {line!r}") from None
    for obj in out.other:
        if obj.get("type") != "map":
            continue
        for name, target in (("@boost", ev.boosts), ("@guard", ev.guards)):
            for cpu, n in (obj.get("data", {}).get(name) or {}).items():
                target[int(cpu)] = int(n)
    return ev


def summary(ev: WindowEvents, ctx: ProbeContext = NO_CONTEXT) -> dict[str, float]:
    open_us = np.array([c[3] for c in ev.closes], dtype=float) / 1000.0
    out = {"windows_opened": len(ev.opens), "explicit_windows": sum(o[4] for o in ev.opens),
           "windows_closed_early": len(ev.closes), "freq_boosts": sum(ev.boosts.values()),
           "idle_guards": sum(ev.guards.values()), "placements": ev.placements, "preemptions": ev.preemptions}
    if len(open_us):
        out["open_p50_us"] = float(np.percentile(open_us, 50))
    return out


def to_csv(ev: WindowEvents) -> str:
    rows = [("open", pid, cpu, ns, us, x) for pid, cpu, ns, us, x in ev.opens]
    rows += [("close", pid, cpu, ns, open_ns, None) for pid, cpu, ns, open_ns in ev.closes]
    return csv_text("event,pid,cpu,ns,value,explicit".split(","), sorted(rows, key=lambda r: int(r[3])))
