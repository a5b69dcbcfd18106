"""The frontier bound: the least energy one agent step can cost on one CPU within a latency.

A step is: the CPU idles for `wait_us` in some idle state, is woken, pays the state's exit latency,
and runs `cycles` (kHz * 1e3 * seconds) finishing within `latency_us` of the wakeup. The bound is
what the simulated meter would charge for the best such step, so a measured step's efficiency is
eta = bound / measured, 1.0 when the governor found the physical optimum.

The compute schedule follows Ishihara & Yasuura (ISLPED 1998): with the latency budget B after the
exit, the least-energy way to run `cycles` at mean frequency cycles/B mixes the two adjacent OPPs on
the lower convex hull of (1/f, energy per cycle); below the critical speed f* (the hull OPP with the
least energy per cycle, Jejurikar et al., DAC 2004) running faster and idling costs less.

Charging follows the simulated meter: the CPU idles (and spends the exit latency, at the active
power) at the OPP it last ran at, taken as the lowest OPP the schedule uses. The step ends when the
last cycle is done: the loop's next wait starts then, so finishing early is not charged as idle
(a run that finishes early would otherwise be measured below its own bound).

Lower bound, with two limits stated plainly: OPP transition latency is ignored (instant switches),
and the schedules considered are one hull OPP for the whole step, or above f* the adjacent-hull mix
that fills B exactly. A governor that drops to a lower-voltage OPP just before idling is not
modelled: it would idle below this bound only by paying a transition the bound does not charge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.platform.energy import Opp, PowerModel, State

_REL = 1e-9          # relative slack on time comparisons (cycles from float step times)


@dataclass(frozen=True)
class FrontierPoint:
    energy_uj: float
    state: str                                   # the idle state for the wait
    opps: tuple[tuple[int, float], ...]          # (khz, time_us) run, time > 0, ascending khz
    idle_uj: float                               # the wait, at the idle OPP
    exit_uj: float                               # the exit latency, at the idle OPP's active power
    compute_uj: float
    idle_khz: int                                # the OPP the CPU idled (and exited) at
    finish_us: float                             # wakeup -> last cycle done (<= latency_us)


def charge(model: PowerModel, state: State | str, schedule: Sequence[tuple[int, float]], wait_us: float,
           idle_khz: int | None = None) -> FrontierPoint:
    """What the meter charges for one step: idle `wait_us` in `state`, exit, then run `schedule`.

    The CPU idles at the lowest OPP the schedule uses (`idle_khz` when the schedule is empty or the
    caller knows better, e.g. a userspace governor's fixed OPP)."""
    s = model.state(state) if isinstance(state, str) else state
    sched = tuple(sorted(((int(k), float(t)) for k, t in schedule if t > 0), key=lambda x: x[0]))
    if idle_khz is None:
        if not sched:
            raise ValueError("an empty schedule needs idle_khz")
        idle_khz = sched[0][0]
    low = model.opp(idle_khz)
    idle = model.idle_uw(s, low) * wait_us / 1e6
    exit_ = model.active_uw(low) * s.exit_latency_us / 1e6
    compute = sum(model.active_uw(model.opp(k)) * t for k, t in sched) / 1e6
    return FrontierPoint(idle + exit_ + compute, s.name, sched, idle, exit_, compute, idle_khz,
                         s.exit_latency_us + sum(t for _, t in sched))


def min_energy(model: PowerModel, cycles: float, wait_us: float, latency_us: float, *,
               states: Sequence[str] | None = None, opps: Sequence[int] | None = None) -> FrontierPoint | None:
    """The least energy for one step (see the module docstring), or None when no allowed idle state and
    OPP can finish `cycles` within `latency_us` of the wakeup. `states` / `opps` (names / kHz) restrict
    what the step may use, e.g. to what a cell's platform knobs allow."""
    for name, v in (("cycles", cycles), ("wait_us", wait_us), ("latency_us", latency_us)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, not {v}")
    allowed_opps = list(model.opps) if opps is None else [model.opp(k) for k in opps]
    allowed_states = list(model.states) if states is None else [model.state(n) for n in states]
    if not allowed_opps or not allowed_states:
        raise ValueError("no OPP or no idle state allowed")
    hull, fstar = _shape(model, tuple(allowed_opps))
    work = cycles * 1000                               # kHz * us
    best: FrontierPoint | None = None
    for s in allowed_states:
        if s.exit_latency_us > latency_us:
            continue
        budget = latency_us - s.exit_latency_us
        slack = budget * (1 + _REL) + _REL
        candidates: list[tuple[list[tuple[int, float]], int]] = []
        for o in hull:                                 # one OPP, finishing by the deadline
            t = work / o.khz
            if t <= slack:
                candidates.append(([(o.khz, t)], o.khz))
        mix = _hull_mix(hull, fstar, work, budget)
        if mix is not None:
            candidates.append(mix)
        for sched, idle_khz in candidates:
            p = charge(model, s, sched, wait_us, idle_khz=idle_khz)
            if best is None or p.energy_uj < best.energy_uj * (1 - _REL):
                best = p
    return best


@functools.lru_cache(maxsize=256)
def _shape(model: PowerModel, opps: tuple[Opp, ...]) -> tuple[tuple[Opp, ...], Opp]:
    """The hull and the critical speed (exact rational arithmetic: worth caching for curves)."""
    return model.hull_opps(opps), model.critical_opp(opps)


def _hull_mix(hull: Sequence[Opp], fstar: Opp, work: float, budget: float):
    """Above the critical speed: the two adjacent hull OPPs whose time-mix runs `work` in exactly `budget`."""
    if budget <= 0 or work <= 0:
        return None
    f_req = work / budget
    if f_req <= fstar.khz * (1 + _REL) or f_req > hull[-1].khz * (1 + _REL):
        return None
    above = [o for o in hull if o.khz >= fstar.khz]
    for a, b in zip(above, above[1:], strict=False):
        if a.khz < f_req <= b.khz * (1 + _REL):
            t_b = min(budget, max(0.0, (work - a.khz * budget) / (b.khz - a.khz)))
            t_a = budget - t_b
            if t_a <= budget * _REL:               # f_req == f_b: that is b alone, already a candidate
                return None
            return [(a.khz, t_a), (b.khz, t_b)], a.khz
    return None


def efficiency(e_min_uj: float, e_measured_uj: float) -> float:
    """eta = bound / measured: 1.0 at the frontier, lower the more a governor wastes."""
    if not (math.isfinite(e_measured_uj) and e_measured_uj > 0 and math.isfinite(e_min_uj) and e_min_uj >= 0):
        raise ValueError(f"efficiency needs a bound >= 0 and a measured energy > 0, not {e_min_uj} / {e_measured_uj}")
    return e_min_uj / e_measured_uj


def curve(model: PowerModel, cycles: float, wait_us: float, latencies_us: Sequence[float], *,
          states: Sequence[str] | None = None,
          opps: Sequence[int] | None = None) -> list[tuple[float, FrontierPoint | None]]:
    """The bound over a range of latencies (for the energy-latency plot); None where infeasible."""
    return [(float(lat), min_energy(model, cycles, wait_us, lat, states=states, opps=opps)) for lat in latencies_us]
