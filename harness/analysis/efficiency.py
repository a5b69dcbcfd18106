"""A cell against the physical frontier: how much more energy than the platform's minimum it spent
for the latency it achieved.

Per step on the agent's pinned CPU, the cell did the step's compute (the workload's units, in
cycles of the simulated CPU) within its latency, plus other work (the loop's bookkeeping, the
kernel's, from the meter's cycle count), and idled the rest of the period. The bound
(harness/platform/frontier.py) does the step's compute within the same latency at the least energy
and the other work at the critical speed (the least energy per cycle), idling the rest. Cells whose
agent is not pinned, that run several agents or bursts, or that ran without virtual time (a unit's
cycles are then unknown) get no frontier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.analysis.steps import Steps
from harness.platform import frontier
from harness.platform.energy import PowerModel
from harness.records import Frontier, PlatformSummary
from harness.spec.model import CellSpec, SimPlatform
from harness.workload.command import step_cycles


def bound(model: PowerModel, step: float, other: float, period_us: float, latency_us: float, *,
          states: Sequence[str] | None = None, opps: Sequence[int] | None = None) -> frontier.FrontierPoint | None:
    """The least energy for one period: `step` cycles within `latency_us` of the wakeup, `other`
    cycles at the critical speed of the allowed OPPs, idle for the rest of `period_us`."""
    allowed = [model.opp(k) for k in opps] if opps is not None else list(model.opps)
    fstar = model.critical_opp(allowed)
    other_us = other * 1000 / fstar.khz
    wait = period_us - latency_us - other_us
    if wait < 0:
        return None
    p = frontier.min_energy(model, step, wait, latency_us, states=states, opps=opps)
    if p is None:
        return None
    extra = model.active_uw(fstar) * other_us / 1e6
    return frontier.FrontierPoint(p.energy_uj + extra, p.state, p.opps, p.idle_uj, p.exit_uj,
                                  p.compute_uj + extra, p.idle_khz, p.finish_us)


def cell_frontier(spec: CellSpec, steps: Steps, plat: PlatformSummary, timing: str) -> Frontier | None:
    """The cell's frontier figures, or None when the cell has no single agent CPU to judge."""
    w = spec.workload
    if (w.agents != 1 or plat.agent_cpu is None or not plat.agent_energy_per_step_by_repeat_uj
            or timing != "virtual"):
        return None
    model = PowerModel.from_sim(spec.platform.sim)
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
        etas.append(round(p.energy_uj / energy_r, 4) if p else float("nan"))
    return Frontier(latency_us=round(latency, 2), period_us=round(period, 2), step_cycles=round(work, 1),
                    other_cycles=round(other, 1), energy_uj=round(energy, 3), bound_uj=round(point.energy_uj, 3),
                    eta=round(frontier.efficiency(point.energy_uj, energy), 4), eta_by_repeat=etas,
                    state=point.state, opps_khz=[khz for khz, t in point.opps if t > 0])


def record_model(spec: dict[str, Any]) -> PowerModel:
    """The power model a cell was metered with, from its record's spec (as `cell_frontier` builds it
    from the CellSpec); ValueError (pydantic's included) or KeyError when the spec has none."""
    return PowerModel.from_sim(SimPlatform.model_validate(spec["platform"]["sim"]))


def frontier_curve(model: PowerModel, f: Frontier, latencies_us: Sequence[float]) -> list[float | None]:
    """The cell's bound over other latencies: its step and other cycles, and its gap between steps
    (period - latency: the world's wait) held, so a slower step stretches the period. At the cell's own
    latency this is its `bound_uj`. None where no schedule finishes in time."""
    gap = f.period_us - f.latency_us
    out: list[float | None] = []
    for lat in latencies_us:
        p = bound(model, f.step_cycles, f.other_cycles, gap + lat, lat)
        out.append(p.energy_uj if p else None)
    return out
