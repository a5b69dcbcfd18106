"""Tool 8: idle residency by cpuidle state and by the agent latency guard that held when the
governor chose the state. It separates what a guard did (a CPU kept in POLL under a 1 us
tolerance) from what the governor would have chosen anyway, so the budget's charged guard time
can be set against the physical effect it bought. Needs a CONFIG_AGENT_LATENCY=y kernel."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.guest.share import excerpt
from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, ProbeContext
from harness.probes.csvout import csv_text

TEMPLATE = "idle_guard.bt.j2"
DESCRIPTION = "idle residency per cpuidle state, split by the agent latency guard's tolerance at selection"
TRACEPOINTS = ("agent_latency:agent_idle_guard", "power:cpu_idle", "agent_latency:agent_budget_charge",
               "sched:sched_switch")
UNGUARDED = -1          # the tolerance key of an idle period chosen with no guard in force
_MAPS = ("@idle_ns", "@idle_n")


@dataclass
class GuardResidency:
    # (cpu, cpuidle state index, guard tolerance us or UNGUARDED) -> ns idle, and periods
    ns: dict[tuple[int, int, int], int] = field(default_factory=dict)
    periods: dict[tuple[int, int, int], int] = field(default_factory=dict)
    # (pid, "window" | "guard") -> ns the budget charged over the same interval, and pid -> name
    charged: dict[tuple[int, str], int] = field(default_factory=dict)
    charges: dict[tuple[int, str], int] = field(default_factory=dict)   # how many charges
    comm: dict[int, str] = field(default_factory=dict)


def _key(text: str) -> tuple[int, int, int]:
    cpu, state, tol = (int(x) for x in str(text).split(","))
    if cpu < 0 or not 0 <= state < 64 or tol < UNGUARDED:
        raise ValueError(text)
    return cpu, state, tol


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> GuardResidency:
    if out.printf:
        raise ProbeOutputError(f"idle_guard: unexpected line {out.printf[0]!r}")
    r = GuardResidency()
    for obj in out.other:
        if obj.get("type") != "map":
            continue
        data = obj.get("data") or {}
        for name, target in zip(_MAPS, (r.ns, r.periods), strict=True):
            table = data.get(name)
            if table is None:
                continue
            try:
                for k, v in table.items():
                    target[_key(k)] = int(v)
            except (AttributeError, TypeError, ValueError):
                raise ProbeOutputError(f"idle_guard: {name} is not a map of cpu,state,tolerance") from None
        try:
            for name, target in (("@charged_ns", r.charged), ("@charged_n", r.charges)):
                for k, v in (data.get(name) or {}).items():
                    pid, what = str(k).split(",", 1)
                    if what not in ("window", "guard"):
                        raise ValueError(what)
                    target[(int(pid), what)] = int(v)
            for k, v in (data.get("@comm") or {}).items():
                r.comm[int(k)] = excerpt(str(v), 16)
        except (AttributeError, TypeError, ValueError):
            raise ProbeOutputError("idle_guard: @charged_ns or @comm is not a map of pid[,window|guard]") from None
    return r


def summary(r: GuardResidency, ctx: ProbeContext = NO_CONTEXT) -> dict:
    """us idle by guard tolerance ("-1": none) and by state, and POLL (state 0) by tolerance: the
    guarded POLL time is what a tight guard bought."""
    by_tol: dict[int, float] = defaultdict(float)
    by_state: dict[int, float] = defaultdict(float)
    poll: dict[int, float] = defaultdict(float)
    for (_cpu, state, tol), ns in r.ns.items():
        by_tol[tol] += ns / 1000.0
        by_state[state] += ns / 1000.0
        if state == 0:
            poll[tol] += ns / 1000.0
    return {"idle_us": sum(by_tol.values()),
            "guarded_idle_us": sum(v for t, v in by_tol.items() if t != UNGUARDED),
            "idle_us_by_tolerance": {str(k): round(v, 3) for k, v in sorted(by_tol.items())},
            "idle_us_by_state": {str(k): round(v, 3) for k, v in sorted(by_state.items())},
            "poll_us_by_tolerance": {str(k): round(v, 3) for k, v in sorted(poll.items())},
            "idle_periods": sum(r.periods.values()),
            "charged_us_by_comm": _charged_by_comm(r),
            "charges_by_comm": _charged_by_comm(r, counts=True)}


def _charged_by_comm(r: GuardResidency, counts: bool = False) -> dict[str, dict[str, float]]:
    """The budget's charge over the traced interval (us, or how many charges), by task name (the
    abuser's threads share one)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (pid, what), v in (r.charges if counts else r.charged).items():
        out[r.comm.get(pid, f"pid {pid}")][what] += v if counts else v / 1000.0
    return {k: {w: round(v, 3) for w, v in sorted(d.items())} for k, d in sorted(out.items())}


def to_csv(r: GuardResidency) -> str:
    rows = [(cpu, state, tol, ns, r.periods.get((cpu, state, tol), 0))
            for (cpu, state, tol), ns in sorted(r.ns.items())]
    return csv_text(("cpu", "state", "tolerance_us", "idle_ns", "periods"), rows)
