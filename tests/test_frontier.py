"""The energy model and the frontier bound: hand-computed cases and the properties eta relies on."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from harness.platform import presets
from harness.platform.energy import Opp, PowerModel, State
from harness.platform.frontier import charge, curve, efficiency, min_energy

A, B, C = Opp(1_000_000, 800_000), Opp(2_000_000, 1_000_000), Opp(3_000_000, 1_300_000)
D = Opp(2_500_000, 1_250_000)           # above the B-C segment: dominated
WFI = State("WFI", 1, 1, "clock-gated")
SLEEP = State("SLEEP", 100, 300, 5.0)
DEEP = State("DEEP", 1000, 3000, 1.0)

# C = 100 uW/MHz/V^2, 200 mA leakage. Active power: A 64 + 160 = 224 mW (0.224 nJ/cycle),
# B 200 + 200 = 400 mW (0.200 nJ/cycle: the critical speed), C 507 + 260 = 767 mW (0.2557 nJ/cycle).
HAND = PowerModel((A, B, C), 100, 200_000, (WFI, SLEEP, DEEP))


def cycles_at(opp: Opp, us: float) -> float:
    return us * opp.khz / 1000


def preset_models():
    return [pytest.param(presets.model(n), id=n) for n in presets.names()]


# --- the energy model ----------------------------------------------------------------------------

def test_power_formulas_and_idle_kinds():
    m = HAND
    assert m.dynamic_uw(B) == pytest.approx(200_000)
    assert m.static_uw(B) == pytest.approx(200_000)
    assert m.active_uw(C) == pytest.approx(507_000 + 260_000)
    assert m.idle_uw("WFI", C) == pytest.approx(260_000)           # the clock stops, the voltage stays
    assert m.idle_uw("SLEEP", C) == m.idle_uw("SLEEP", A) == 5_000  # power-gated: independent of V
    poll = State("POLL", 0, 0, "active")
    assert PowerModel((A, B), 100, 200_000, (poll,)).idle_uw(poll, B) == pytest.approx(400_000)


def test_kernel_integer_math():
    m = PowerModel((Opp(1_800_000, 1_200_000),), 436, 170_000, (WFI,))
    o = m.opps[0]
    assert m.kernel_dynamic_uw(o) == (436 * 1200 * 1200 * 1800) // 1_000_000 == 1_130_112
    assert m.kernel_static_uw(o) == 204_000
    assert m.kernel_active_uw(o) == 1_334_112
    odd = Opp(1_234_567, 876_543)                  # truncated to 1234 MHz and 876 mV, as the kernel does
    assert PowerModel((odd,), 436, 170_000, (WFI,)).kernel_dynamic_uw(odd) == (436 * 876 * 876 * 1234) // 10**6
    with pytest.raises(ValueError, match="integer"):
        PowerModel((o,), 436.5, 170_000, (WFI,)).kernel_active_uw(o)


def test_from_sim_takes_objects_and_mappings():
    ns = SimpleNamespace(opps=[SimpleNamespace(khz=1_000_000, microvolt=800_000)], dynamic_power_coefficient=100,
                         leakage_ua=200_000, cstates=[SimpleNamespace(name="WFI", exit_latency_us=1,
                                                                      target_residency_us=1, power_mw="clock-gated")])
    as_map = {"opps": [{"khz": 1_000_000, "microvolt": 800_000}], "dynamic_power_coefficient": 100,
              "leakage_ua": 200_000, "cstates": [{"name": "WFI", "exit_latency_us": 1, "target_residency_us": 1,
                                                  "power_mw": "clock-gated"}]}
    assert PowerModel.from_sim(ns) == PowerModel.from_sim(as_map) == PowerModel((A,), 100, 200_000, (WFI,))


def test_validate_accepts_the_hand_model_and_names_problems():
    assert HAND.validate() == []
    hot = PowerModel((A, B), 100, 200_000, (WFI, State("S", 10, 10, 500.0)))      # 500 mW > 224 mW active at A
    assert any("not below the active" in p for p in hot.validate())
    assert PowerModel((A, B), 100, 200_000, (WFI, State("S", 10, 10, 150.0))).validate() == []   # < WFI's 160 mW
    inverted = PowerModel((A, B), 100, 200_000, (State("S1", 1, 1, 5.0), State("S2", 10, 10, 6.0)))
    assert any("draws more than the shallower S1" in p for p in inverted.validate())
    misplaced = PowerModel((A,), 100, 200_000, (WFI, State("POLL", 2, 2, "active")))
    assert any("only the first" in p for p in misplaced.validate())
    unordered = PowerModel((B, A), 100, 200_000, (WFI,))
    assert any("not strictly ascending" in p for p in unordered.validate())
    bad_name = PowerModel((A,), 100, 200_000, (State("no spaces", 1, 1, "clock-gated"),))
    assert any("does not match" in p for p in bad_name.validate())


def test_hull_critical_speed_and_dominated_opps():
    m = PowerModel((A, B, D, C), 100, 200_000, (WFI, SLEEP))
    assert m.hull_opps() == (A, B, C)
    assert m.dominated_opps() == (D,)
    assert m.critical_opp() == B
    assert m.validate() == []                      # a dominated OPP is information, not an error
    same_v = PowerModel((Opp(408_000, 825_000), Opp(600_000, 825_000), Opp(816_000, 825_000)), 436, 170_000, (WFI,))
    assert same_v.dominated_opps() == ()           # collinear points (one voltage) stay on the hull


# --- the frontier bound --------------------------------------------------------------------------

def test_hand_computed_mix_above_the_critical_speed():
    # 2.5e6 cycles in 1000 us after SLEEP's 100 us exit: f_req = 2.5 GHz, between hull OPPs B and C.
    # t_B = t_C = 500 us. Idle and exit at B: 5 mW * 1000 us = 5 uJ, 400 mW * 100 us = 40 uJ;
    # compute 400 mW * 500 us + 767 mW * 500 us = 583.5 uJ. Total 628.5 uJ (C alone: 720.9; WFI: 750.8).
    p = min_energy(HAND, 2.5e6, 1000, 1100)
    assert p.state == "SLEEP"
    assert p.opps == ((B.khz, pytest.approx(500)), (C.khz, pytest.approx(500)))
    assert (p.idle_uj, p.exit_uj, p.compute_uj) == (pytest.approx(5), pytest.approx(40), pytest.approx(583.5))
    assert p.energy_uj == pytest.approx(628.5)
    assert p.idle_khz == B.khz and p.finish_us == pytest.approx(1100)


def test_hand_computed_below_the_critical_speed():
    # 1e6 cycles (1 ms at A), 2000 us: B alone (the critical speed) costs 5 + 40 + 200 = 245 uJ,
    # A alone 5 + 22.4 + 224 = 251.4 uJ. With only DEEP (1 ms exit, paid at the idle OPP's active power)
    # A wins: 1 + 224 + 224 = 449 uJ against B's 1 + 400 + 200 = 601 uJ.
    p = min_energy(HAND, 1e6, 1000, 2000)
    assert (p.state, p.opps, p.energy_uj) == ("SLEEP", ((B.khz, pytest.approx(500)),), pytest.approx(245))
    assert p.finish_us == pytest.approx(600)       # finishing early is not charged: the next wait starts
    p = min_energy(HAND, 1e6, 1000, 3000, states=["DEEP"])
    assert (p.state, p.opps, p.energy_uj) == ("DEEP", ((A.khz, pytest.approx(1000)),), pytest.approx(449))


@pytest.mark.parametrize("m", preset_models())
def test_single_opp_on_the_hull_is_the_frontier(m):
    """A userspace governor at hull OPP f >= f*, idling in s, with latency exactly exit(s) + cycles/f:
    the bound equals what the meter charges it (eta 1.0); below f* it is a bound (eta <= 1)."""
    fstar = m.critical_opp()
    cycles, wait = cycles_at(m.opps[-1], 2400), 2000
    for f in m.hull_opps():
        for s in m.states:
            t = cycles * 1000 / f.khz
            measured = m.idle_uw(s, f) * wait + m.active_uw(f) * s.exit_latency_us + m.active_uw(f) * t
            assert charge(m, s, [(f.khz, t)], wait).energy_uj == pytest.approx(measured / 1e6, rel=1e-12)
            p = min_energy(m, cycles, wait, s.exit_latency_us + t, states=[s.name])
            eta = efficiency(p.energy_uj, measured / 1e6)
            if f.khz >= fstar.khz:
                assert eta == pytest.approx(1.0, rel=1e-9), (f, s)
                assert p.opps == ((f.khz, pytest.approx(t)),)
            else:
                assert eta <= 1 + 1e-9, (f, s)


@pytest.mark.parametrize("m", preset_models())
def test_bound_never_exceeds_any_single_hull_opp_run(m):
    cycles = cycles_at(m.opps[-1], 1000)
    for wait in (50, 2000, 20_000):
        for lat in (1500, 5000, 20_000):
            p = min_energy(m, cycles, wait, lat)
            for f in m.hull_opps():
                for s in m.states:
                    t = cycles * 1000 / f.khz
                    if s.exit_latency_us + t <= lat:
                        assert p.energy_uj <= charge(m, s, [(f.khz, t)], wait).energy_uj * (1 + 1e-9)


@pytest.mark.parametrize("m", [pytest.param(HAND, id="hand"), *preset_models()])
def test_monotone_non_increasing_in_latency(m):
    cycles = cycles_at(m.opps[-1], 1000)
    for wait in (0, 500, 5000):
        for states in (None, [m.states[0].name], [m.states[-1].name]):
            lats = [100 + 25 * i for i in range(400)]
            energies = [p.energy_uj for _, p in curve(m, cycles, wait, lats, states=states) if p is not None]
            assert energies, states
            assert all(b <= a * (1 + 1e-9) for a, b in zip(energies, energies[1:], strict=False)), (wait, states)


@pytest.mark.parametrize("m", [pytest.param(HAND, id="hand"), *preset_models()])
def test_infeasible_below_exit_plus_cycles_at_fmax(m):
    fmax = m.opps[-1]
    cycles = cycles_at(fmax, 800)
    for s in m.states:
        edge = s.exit_latency_us + 800
        assert min_energy(m, cycles, 1000, edge * (1 - 1e-6), states=[s.name]) is None
        p = min_energy(m, cycles, 1000, edge, states=[s.name])
        assert p.opps == ((fmax.khz, pytest.approx(800)),)
    shallowest = min(s.exit_latency_us for s in m.states)
    assert min_energy(m, cycles, 1000, (shallowest + 800) * (1 - 1e-6)) is None
    assert min_energy(m, cycles, 1000, 10_000, opps=[m.opps[0].khz]) is not None
    assert curve(m, cycles, 1000, [1, 10_000])[0] == (1.0, None)


def test_dominated_opps_are_never_used():
    m = PowerModel((A, B, D, C), 100, 200_000, (WFI, SLEEP, DEEP))
    cycles = cycles_at(C, 1000)
    used = set()
    for wait in (0, 1000, 50_000):
        for lat in [1000 + 10 * i for i in range(500)]:
            p = min_energy(m, cycles, wait, lat)
            if p is not None:
                used |= {k for k, _ in p.opps}
    assert D.khz not in used and {B.khz, C.khz} <= used


@pytest.mark.parametrize("m", [pytest.param(HAND, id="hand"), *preset_models()])
def test_a_mix_meets_the_deadline_exactly(m):
    cycles = cycles_at(m.opps[-1], 1000)
    mixes = 0
    for lat in [1000 + 37 * i for i in range(200)]:
        p = min_energy(m, cycles, 500, lat)
        if p is None:
            continue
        assert sum(k * t / 1000 for k, t in p.opps) == pytest.approx(cycles, rel=1e-9)
        assert p.finish_us <= lat * (1 + 1e-9)
        if len(p.opps) == 2:
            mixes += 1
            (fa, _), (fb, _) = p.opps
            hull = [o.khz for o in m.hull_opps()]
            assert hull.index(fb) == hull.index(fa) + 1            # adjacent on the hull
            assert fa >= m.critical_opp().khz
            assert p.finish_us == pytest.approx(lat, rel=1e-9)
            assert p.idle_khz == fa
        assert p.energy_uj == pytest.approx(p.idle_uj + p.exit_uj + p.compute_uj)
    assert mixes > 0


def test_poll_only_burns_active_power_throughout():
    m = PowerModel((A, B, C), 100, 200_000, (State("POLL", 0, 0, "active"), WFI))
    for lat in (700, 1000, 3000):
        p = min_energy(m, cycles_at(B, 600), 2000, lat, states=["POLL"])
        idle = m.opp(p.idle_khz)
        assert p.exit_uj == 0
        assert p.idle_uj == pytest.approx(m.active_uw(idle) * 2000 / 1e6)
        assert p.energy_uj == pytest.approx((m.active_uw(idle) * 2000 + sum(m.active_uw(m.opp(k)) * t
                                                                            for k, t in p.opps)) / 1e6)
    # a long wait in POLL favours the slowest hull OPP that meets the latency (its active power is the least)
    p = min_energy(m, cycles_at(B, 600), 100_000, 5000, states=["POLL"])
    assert p.idle_khz == A.khz


def test_restrictions_and_argument_errors():
    p = min_energy(HAND, 2.5e6, 1000, 1100, opps=[A.khz, C.khz])      # B not allowed: the hull is A-C
    assert {k for k, _ in p.opps} <= {A.khz, C.khz}
    with pytest.raises(ValueError, match="no OPP"):
        min_energy(HAND, 1e6, 0, 1000, opps=[123])
    with pytest.raises(ValueError, match="no idle state"):
        min_energy(HAND, 1e6, 0, 1000, states=["C6"])
    with pytest.raises(ValueError, match="finite"):
        min_energy(HAND, math.nan, 0, 1000)
    zero = min_energy(HAND, 0, 1000, 2000)                              # nothing to run: idle at the lowest V
    assert zero.opps == () and zero.compute_uj == 0 and zero.idle_khz == A.khz


def test_efficiency():
    assert efficiency(50, 100) == 0.5
    assert efficiency(0, 1) == 0
    for bad in ((1, 0), (1, -1), (-1, 1), (math.inf, 1)):
        with pytest.raises(ValueError):
            efficiency(*bad)


def test_compute_part_matches_a_linear_program():
    """With nothing charged for the wait and the exit, the bound is the least compute energy over every
    schedule of any OPPs (scipy's LP): Ishihara & Yasuura's two adjacent hull OPPs, or f* when slack."""
    import random

    from scipy.optimize import linprog

    rng = random.Random(7)
    free = State("FREE", 0, 0, 0.0)
    for _ in range(40):
        khz = sorted(rng.sample(range(200, 4000, 50), rng.randint(2, 8)))
        uv, opps = 600_000, []
        for k in khz:
            uv += rng.randint(0, 80) * 1000
            opps.append(Opp(k * 1000, uv))
        m = PowerModel(tuple(opps), rng.uniform(50, 2000), rng.uniform(0, 1e6), (free,))
        cycles = cycles_at(opps[-1], rng.uniform(100, 3000))
        fastest = cycles * 1000 / opps[-1].khz
        for budget in (fastest, fastest * 1.3, fastest * 2, fastest * 6, fastest * 40):
            lp = linprog([m.active_uw(o) / 1e6 for o in opps], A_ub=[[1] * len(opps)], b_ub=[budget],
                         A_eq=[[o.khz / 1000 for o in opps]], b_eq=[cycles], bounds=(0, None), method="highs")
            assert lp.status == 0
            p = min_energy(m, cycles, 0, budget)
            assert p.energy_uj == pytest.approx(lp.fun, rel=1e-6), (m, budget)
