"""A cell against the physical frontier: how much more energy than the platform's minimum it spent
for the latency it achieved.

Per step on the agent's pinned CPU, the cell did the step's compute (the workload's units, in
cycles of the simulated CPU) within its latency, plus other work (the loop's bookkeeping, the
kernel's, from the meter's cycle count), and idled the rest of the period. The bound
(harness/platform/frontier.py) does the step's compute within the same latency at the least energy
and the other work at the critical speed (the least energy per cycle), idling the rest. Cells whose
agent is not pinned, that run several agents, or that ran without virtual time (a unit's cycles are
then unknown) get no frontier. Where the loop's own stamps are at hand (the runner, `python -m
harness frontier`) every step is bounded on its own, with its work, latency and idle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.analysis.steps import Steps, units_per_step
from harness.platform import frontier
from harness.platform.energy import PowerModel
from harness.records import Frontier, PlatformSummary
from harness.spec.model import UNIT_NS_AT_FMAX, CellSpec, SimPlatform
from harness.workload.command import step_cycles


def bound(model: PowerModel, step: float, other: float, period_us: float, latency_us: float, *,
          states: Sequence[str] | None = None, opps: Sequence[int] | None = None) -> frontier.FrontierPoint | None:
    """The least energy for one period: `step` cycles within `latency_us` of the wakeup, `other`
    cycles at the critical speed of the allowed OPPs, idle for the rest of `period_us`."""
    allowed = [model.opp(k) for k in opps] if opps is not None else list(model.opps)
    fstar = model.critical_opp(allowed)
    other_us = other * 1000 / fstar.khz
    wait = period_us - latency_us - other_us
    if wait < -1e-9 * max(period_us, 1.0):      # (a wait of 0 computed as -1e-15 is a wait of 0)
        return None
    wait = max(wait, 0.0)
    p = frontier.min_energy(model, step, wait, latency_us, states=states, opps=opps)
    if p is None:
        return None
    extra = model.active_uw(fstar) * other_us / 1e6
    return frontier.FrontierPoint(p.energy_uj + extra, p.state, p.opps, p.idle_uj, p.exit_uj,
                                  p.compute_uj + extra, p.idle_khz, p.finish_us)


def cell_frontier(spec: CellSpec, steps: Steps, plat: PlatformSummary, timing: str) -> Frontier | None:
    """The cell's frontier figures, or None when the cell has no single agent CPU to judge. With the
    loop's absolute stamps (what the runner reads from the share) every step is bounded on its own
    (_per_step_frontier); without them (a Steps rebuilt from a parsed steps.csv) a cell of fixed
    work gets the one bound of its mean step, which holds only when its gaps are alike."""
    w = spec.workload
    if (w.agents != 1 or plat.agent_cpu is None or not plat.agent_energy_per_step_by_repeat_uj
            or timing != "virtual"):
        return None
    model = PowerModel.from_sim(spec.platform.sim)
    if steps.idle_before_ns is not None:
        return _per_step_frontier(spec, steps, plat, model)
    work = step_cycles(w, spec.arch, model.opps[-1].khz)
    if work is None:
        return None
    per_repeat = []
    for r, (energy, cycles, period) in enumerate(zip(plat.agent_energy_per_step_by_repeat_uj,
                                                   plat.agent_cycles_per_step_by_repeat,
                                                   plat.period_per_step_by_repeat_us, strict=True)):
        lat = steps.step_ns[steps.repeat == r]
        if not len(lat) or energy <= 0:
            return None
        per_repeat.append((float(np.mean(lat)) / 1000.0, period, max(cycles - work, 0.0), energy))
    latency, period, other, energy = (float(np.mean([x[i] for x in per_repeat])) for i in range(4))
    point = bound(model, work, other, period, latency)
    if point is None:        # faster than the bound's fastest schedule: a unit's cycles are off
        return None
    etas = []
    for lat_r, period_r, other_r, energy_r in per_repeat:
        p = bound(model, work, other_r, period_r, lat_r)
        if p is None:
            return None
        etas.append(round(p.energy_uj / energy_r, 4))
    return Frontier(latency_us=round(latency, 2), period_us=round(period, 2), step_cycles=round(work, 1),
                    other_cycles=round(other, 1), energy_uj=round(energy, 3), bound_uj=round(point.energy_uj, 3),
                    eta=round(frontier.efficiency(point.energy_uj, energy), 4), eta_by_repeat=etas,
                    state=point.state, opps_khz=[khz for khz, t in point.opps if t > 0])


def _per_step_frontier(spec: CellSpec, steps: Steps, plat: PlatformSummary, model: PowerModel) -> Frontier | None:
    """Each step bounded on its own: its work (the loop's units column, or the fixed work and its
    bursts) within its own latency, after its own idle (the time since the agent's previous step
    ended, from the loop's stamps; the first step of a repeat gets the repeat's median), with the
    repeat's other cycles (the meter's, less the steps' work) spread evenly over its steps and run at
    the critical speed; a repeat's bound is the mean over its steps. Neither a mean step nor a mean
    gap would do: the least energy of a step is convex in its work and latency and concave in its
    idle (the deepest state worth entering changes with it), so a mean's bound is not the steps'
    mean bound, and a mean gap can put the bound above what the steps spent."""
    unit = UNIT_NS_AT_FMAX.get(spec.arch)
    if unit is None or steps.idle_before_ns is None or (steps.units is None and spec.workload.compute is not None):
        return None
    fmax = model.opps[-1].khz
    fstar = model.critical_opp(list(model.opps))
    cycles = units_per_step(spec.workload, steps.step, steps.units) * unit * fmax / 1e6
    # The shallowest exit a step can have paid without polling through its wait: a step measured
    # faster than its calibrated work at fmax after that exit (a unit's cost is known to about half
    # a percent: 0.995-1.005 on the quick suite's floor cells, and 0.5 % of a 20 ms burst is 100 us)
    # is bounded with the work that fits, not sent to the polling state (whose idle power would put
    # the bound above what the step spent).
    shallow = min((s.exit_latency_us for s in model.states if s.power_mw != "active"),
                  default=min(s.exit_latency_us for s in model.states))
    bounds, etas, states, opps, clamped = [], [], Counter(), set(), 0
    per_repeat = []
    for r, (energy, other_cycles, period) in enumerate(zip(plat.agent_energy_per_step_by_repeat_uj,
                                                         plat.agent_cycles_per_step_by_repeat,
                                                         plat.period_per_step_by_repeat_us, strict=True)):
        m = steps.repeat == r
        lat, work, idle = steps.step_ns[m] / 1000.0, cycles[m], steps.idle_before_ns[m] / 1000.0
        if not len(lat) or energy <= 0:
            return None
        known = idle[np.isfinite(idle)]
        idle = np.where(np.isfinite(idle), idle, float(np.median(known)) if len(known) else 0.0)
        other = max(other_cycles - float(work.mean()), 0.0)
        other_us = other * 1000 / fstar.khz
        total = 0.0
        for c, latency, gap in zip(work.tolist(), lat.tolist(), idle.tolist(), strict=True):
            fits = max(latency - shallow, 0.0) * fmax / 1000
            if c > fits:
                c, clamped = fits, clamped + 1
            p = bound(model, c, other, max(gap, other_us) + latency, latency)
            if p is None:
                return None
            total += p.energy_uj
            states[p.state] += 1
            opps.update(khz for khz, t in p.opps if t > 0)
        bounds.append(total / len(lat))
        etas.append(round(bounds[-1] / energy, 4))
        per_repeat.append((float(lat.mean()), period, other, energy, float(work.mean())))
    latency, period, other, energy, work_mean = (float(np.mean([x[i] for x in per_repeat])) for i in range(5))
    bound_uj = float(np.mean(bounds))
    return Frontier(latency_us=round(latency, 2), period_us=round(period, 2), step_cycles=round(work_mean, 1),
                    other_cycles=round(other, 1), energy_uj=round(energy, 3), bound_uj=round(bound_uj, 3),
                    eta=round(frontier.efficiency(bound_uj, energy), 4), eta_by_repeat=etas,
                    state=states.most_common(1)[0][0], opps_khz=sorted(opps), per_step=len(steps), clamped=clamped)


def record_model(spec: dict[str, Any]) -> PowerModel:
    """The power model a cell was metered with, from its record's spec (as `cell_frontier` builds it
    from the CellSpec); ValueError (pydantic's included) or KeyError when the spec has none."""
    return PowerModel.from_sim(SimPlatform.model_validate(spec["platform"]["sim"]))


def frontier_curve(model: PowerModel, f: Frontier, latencies_us: Sequence[float]) -> list[float | None]:
    """The cell's bound over other latencies: its step and other cycles, and its gap between steps
    (period - latency: the world's wait) held, so a slower step stretches the period. At the cell's own
    latency this is its `bound_uj`. None where no schedule finishes in time, and everywhere for a
    per-step bound: its steps' work differs, and the mean step's curve would not pass its point."""
    if f.per_step:
        return [None] * len(latencies_us)
    gap = f.period_us - f.latency_us
    out: list[float | None] = []
    for lat in latencies_us:
        p = bound(model, f.step_cycles, f.other_cycles, gap + lat, lat)
        out.append(p.energy_uj if p else None)
    return out

