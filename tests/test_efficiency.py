"""A cell against the frontier (harness/analysis/efficiency.py): the per-period bound with the
other work on the agent's CPU, and the cell's frontier figures from its meter and steps."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from harness.analysis.efficiency import bound, cell_frontier
from harness.analysis.steps import Steps
from harness.platform import presets
from harness.platform.energy import Opp, PowerModel, State
from harness.platform.frontier import min_energy
from harness.records import PlatformSummary
from harness.spec import load_experiment
from harness.spec.model import UNIT_NS_AT_FMAX

A, B, C = Opp(1_000_000, 800_000), Opp(2_000_000, 1_000_000), Opp(3_000_000, 1_300_000)
WFI = State("WFI", 1, 1, "clock-gated")
SLEEP = State("SLEEP", 100, 300, 5.0)
# 100 uW/MHz/V^2, 200 mA: active A 224 mW, B 400 mW (the critical speed), C 767 mW
HAND = PowerModel((A, B, C), 100, 200_000, (WFI, SLEEP))


def test_one_opp_one_state_by_hand():
    # 1e6 cycles of step at B = 500 us, 2e5 other cycles = 100 us, a 5 ms period, 1.2 ms latency:
    # idle 5000 - 1200 - 100 = 3700 us in SLEEP at 5 mW = 18.5 uJ; exit 100 us at 400 mW = 40 uJ;
    # the step 500 us and the other work 100 us at 400 mW = 200 + 40 uJ. 298.5 uJ in all.
    p = bound(HAND, 1e6, 2e5, 5000, 1200, states=["SLEEP"], opps=[B.khz])
    assert p.energy_uj == pytest.approx(298.5)
    assert (p.idle_uj, p.exit_uj, p.compute_uj) == (pytest.approx(18.5), pytest.approx(40), pytest.approx(240))
    assert p.state == "SLEEP" and p.opps == ((B.khz, pytest.approx(500)),) and p.idle_khz == B.khz


@pytest.mark.parametrize("name", presets.names())
def test_one_opp_one_state_is_what_the_meter_charges_at_that_opp(name):
    """Restricted to one OPP f and one state s, the bound is the wait at s's power at f, and the exit,
    the step and the other cycles at f's active power; the latency's slack is not charged."""
    m = presets.model(name)
    step, other, period = m.opps[-1].khz * 1.5, m.opps[-1].khz * 0.25, 20_000.0    # 1.5 ms + 0.25 ms at fmax
    for f in m.opps:
        for s in m.states:
            t_step, t_other = step * 1000 / f.khz, other * 1000 / f.khz
            latency = s.exit_latency_us + t_step + 300
            p = bound(m, step, other, period, latency, states=[s.name], opps=[f.khz])
            assert p is not None, (f, s)
            wait = period - latency - t_other
            want = (m.idle_uw(s, f) * wait + m.active_uw(f) * (s.exit_latency_us + t_step + t_other)) / 1e6
            assert p.energy_uj == pytest.approx(want, rel=1e-9), (f, s)
            # and no restriction can only make it cheaper
            assert bound(m, step, other, period, latency).energy_uj <= p.energy_uj * (1 + 1e-9)


def test_other_cycles_run_at_the_critical_speed_of_the_allowed_opps():
    # unrestricted, f* is B (0.200 nJ/cycle): the other work costs 0.2 nJ x 1e6 = 200 uJ, for 500 us
    with_other = bound(HAND, 1e6, 1e6, 10_000, 2000)
    without = min_energy(HAND, 1e6, 10_000 - 2000 - 500, 2000)
    assert with_other.energy_uj == pytest.approx(without.energy_uj + 200)
    # only A and C allowed: f* is A (0.224 nJ/cycle): 1 ms at A
    ac = bound(HAND, 1e6, 1e6, 10_000, 2000, opps=[A.khz, C.khz])
    assert ac.energy_uj == pytest.approx(min_energy(HAND, 1e6, 10_000 - 2000 - 1000, 2000,
                                                    opps=[A.khz, C.khz]).energy_uj + 224)


def test_none_when_the_period_cannot_hold_the_latency_and_the_other_work():
    # latency 1200 + other 100 us at B: a period of 1300 us leaves no wait, less is impossible
    assert bound(HAND, 1e6, 2e5, 1300, 1200, states=["SLEEP"], opps=[B.khz]).idle_uj == pytest.approx(0)
    assert bound(HAND, 1e6, 2e5, 1299, 1200, states=["SLEEP"], opps=[B.khz]) is None
    assert bound(HAND, 0, 0, 999, 1000) is None
    # and when the step cannot finish within the latency (exit 100 + 500 us at B)
    assert bound(HAND, 1e6, 0, 5000, 599, states=["SLEEP"], opps=[B.khz]) is None


# -- a cell's frontier figures ---------------------------------------------------------------------------

def _cell(tmp_path, **workload):
    w = {"steps": 4, "warmup": 0, "compute_units": 100_000, "agent_cpu": 1, "world_cpu": 0, **workload}
    body = textwrap.dedent("""\
        name: f
        platform: {governor: userspace, userspace_khz: max, only_cstate: shallowest, sim: {preset: rk3399-a72}}
    """) + "workload: {" + ", ".join(f"{k}: {v}" for k, v in w.items()) + "}\n"
    (tmp_path / "f.yaml").write_text(body)
    (cell,) = load_experiment(tmp_path / "f.yaml").cells
    return cell.spec


def _steps(latency_us_by_repeat):
    rep = np.repeat(np.arange(len(latency_us_by_repeat)), [len(x) for x in latency_us_by_repeat])
    n = len(rep)
    lat = np.concatenate([np.asarray(x, dtype=float) * 1000 for x in latency_us_by_repeat])
    z = np.zeros(n)
    return Steps(rep, z, np.arange(n), z, z, lat, z, z, np.ones(n))


def _plat(energy, cycles, period, agent_cpu=1):
    return PlatformSummary(energy_uj=1, energy_per_step_uj=1, energy_per_step_by_repeat_uj=[1.0] * len(energy),
                           avg_power_mw=1, elapsed_s=1, active_fraction=0.5, freq_residency={}, idle_residency={},
                           idle_entries={}, period_per_step_by_repeat_us=period, agent_cpu=agent_cpu,
                           agent_energy_per_step_by_repeat_uj=energy, agent_cycles_per_step_by_repeat=cycles,
                           agent_active_per_step_by_repeat_us=[1.0] * len(energy),
                           agent_idle_per_step_by_repeat_us=[1.0] * len(energy))


def test_cell_frontier_from_the_meter_and_the_steps(tmp_path):
    spec = _cell(tmp_path)
    m = PowerModel.from_sim(spec.platform.sim)
    fmax = m.opps[-1].khz
    work = 100_000 * UNIT_NS_AT_FMAX[spec.arch] * fmax / 1e6
    steps = _steps([[1300, 1500], [1400, 1400]])
    plat = _plat(energy=[900.0, 1100.0], cycles=[work + 50_000, work + 30_000], period=[5000.0, 5200.0])
    fr = cell_frontier(spec, steps, plat, "virtual")
    assert fr.latency_us == 1400 and fr.period_us == 5100 and fr.energy_uj == 1000
    assert fr.step_cycles == pytest.approx(work, abs=0.1) and fr.other_cycles == pytest.approx(40_000)
    want = bound(m, work, 40_000, 5100, 1400)
    assert fr.bound_uj == pytest.approx(want.energy_uj, abs=1e-3)
    assert fr.eta == pytest.approx(want.energy_uj / 1000, abs=1e-4)
    assert fr.eta_by_repeat == [pytest.approx(bound(m, work, 50_000, 5000, 1400).energy_uj / 900, abs=1e-4),
                                pytest.approx(bound(m, work, 30_000, 5200, 1400).energy_uj / 1100, abs=1e-4)]
    assert fr.state == want.state and fr.opps_khz == [k for k, t in want.opps if t > 0]
    # fewer cycles on the CPU than the step's own: no negative other work
    assert cell_frontier(spec, steps, _plat([900.0, 1100.0], [work / 2] * 2, [5000.0, 5200.0]),
                         "virtual").other_cycles == 0


def test_no_cell_frontier_without_one_pinned_agent_in_virtual_time(tmp_path):
    spec = _cell(tmp_path)
    steps = _steps([[1300, 1500]])
    ok = _plat([900.0], [3e5], [5000.0])
    assert cell_frontier(spec, steps, ok, "virtual") is not None
    assert cell_frontier(spec, steps, ok, "realtime") is None                # a unit's cycles are unknown
    assert cell_frontier(spec, steps, _plat([900.0], [3e5], [5000.0], agent_cpu=None), "virtual") is None
    assert cell_frontier(spec, steps, _plat([], [], []), "virtual") is None
    assert cell_frontier(spec, steps, _plat([0.0], [3e5], [5000.0]), "virtual") is None   # nothing metered
    assert cell_frontier(spec, steps, _plat([900.0], [3e5], [1000.0]), "virtual") is None  # period < latency
    assert cell_frontier(_cell(tmp_path, agents=2), steps, ok, "virtual") is None
    # a compute distribution without the loop's units column: nothing to bound each step by
    assert cell_frontier(_cell(tmp_path, compute_units=200000, compute="{distribution: uniform, min_units: 1, "
                                                                       "max_units: 9}"), steps, ok, "virtual") is None


def _stamped(steps: Steps, idle_us, units=None) -> Steps:
    """The steps as the runner has them: with the idle before each step (NaN: the repeat's first)."""
    return Steps(steps.repeat, steps.agent, steps.step, steps.wait_ns, steps.wake_ns, steps.step_ns,
                 steps.compute_ns, steps.phases_ns, steps.cpu,
                 units=None if units is None else np.asarray(units, dtype=float),
                 idle_before_ns=np.asarray(idle_us, dtype=float) * 1000)


def _own(m, cyc, other, idle, lat):
    """One step's bound as _per_step_frontier takes it: its idle, its latency, the other work at f*."""
    other_us = other * 1000 / m.critical_opp(list(m.opps)).khz
    return bound(m, cyc, other, max(idle, other_us) + lat, lat).energy_uj


def test_every_step_is_bounded_with_its_own_work_latency_and_idle(tmp_path):
    """With the loop's stamps, each step is bounded on its own and the bounds averaged: the least
    energy of a step is convex in its work and latency and concave in its idle, so neither a mean
    step nor a mean gap gives the steps' bound."""
    spec = _cell(tmp_path, compute_units=200000, compute="{distribution: uniform, min_units: 50000, max_units: 150000}")
    m = PowerModel.from_sim(spec.platform.sim)
    per_unit = UNIT_NS_AT_FMAX[spec.arch] * m.opps[-1].khz / 1e6
    units = [50_000, 150_000, 100_000, 120_000]
    idle = [np.nan, 300.0, np.nan, 9000.0]          # the first of each repeat: its repeat's median
    steps = _stamped(_steps([[900, 2600], [1500, 1700]]), idle, units)
    cyc = [u * per_unit for u in units]
    plat = _plat(energy=[900.0, 1100.0], cycles=[sum(cyc[:2]) / 2 + 50_000, sum(cyc[2:]) / 2 + 30_000],
                 period=[6000.0, 6200.0])
    fr = cell_frontier(spec, steps, plat, "virtual")
    assert fr.per_step == 4 and fr.clamped == 0
    b0 = [_own(m, cyc[0], 50_000, 300, 900), _own(m, cyc[1], 50_000, 300, 2600)]
    b1 = [_own(m, cyc[2], 30_000, 9000, 1500), _own(m, cyc[3], 30_000, 9000, 1700)]
    assert fr.eta_by_repeat == [pytest.approx(np.mean(b0) / 900, abs=1e-4), pytest.approx(np.mean(b1) / 1100, abs=1e-4)]
    assert fr.bound_uj == pytest.approx((np.mean(b0) + np.mean(b1)) / 2, abs=1e-3)
    assert fr.step_cycles == pytest.approx(np.mean(cyc), abs=0.1) and fr.latency_us == 1675
    # no idle (a step signalled before the last one ended) and a long one: the mean gap's bound is
    # above the two steps' own (concavity: the step without idle pays no exit at all)
    two = _stamped(_steps([[1400, 1400]]), [0.0, 20_000.0], [100_000, 100_000])
    p2 = _plat([1000.0], [100_000 * per_unit + 40_000], [11_450.0])
    own = cell_frontier(spec, two, p2, "virtual").bound_uj
    mean_gap = bound(m, 100_000 * per_unit, 40_000, 11_450.0, 1400).energy_uj
    assert own < mean_gap * (1 - 1e-3)
    # a step measured faster than its calibrated work at fmax is bounded with the work that fits
    fast = cell_frontier(spec, _stamped(_steps([[1.0, 1400]]), [500.0, 500.0], [100_000, 100_000]), p2, "virtual")
    assert fast.clamped == 1 and fast.per_step == 2


def test_without_the_loops_stamps_fixed_work_gets_its_mean_steps_bound_and_varying_work_none(tmp_path):
    fixed, varying = _cell(tmp_path, compute_units=100_000), _cell(
        tmp_path, compute_units=200000, compute="{distribution: uniform, min_units: 1, max_units: 9}")
    m = PowerModel.from_sim(fixed.platform.sim)
    per_unit = UNIT_NS_AT_FMAX[fixed.arch] * m.opps[-1].khz / 1e6
    steps, p1 = _steps([[1400, 1400]]), _plat([1000.0], [100_000 * per_unit + 40_000], [5100.0])
    one = cell_frontier(fixed, steps, p1, "virtual")
    assert one.per_step is None
    assert one.bound_uj == pytest.approx(bound(m, 100_000 * per_unit, 40_000, 5100, 1400).energy_uj, abs=1e-3)
    assert cell_frontier(varying, steps, p1, "virtual") is None


def test_bursts_are_bounded_step_by_step_from_the_loops_rule(tmp_path):
    spec = _cell(tmp_path, burst_every=2, burst_units=300_000)
    m = PowerModel.from_sim(spec.platform.sim)
    per_unit = UNIT_NS_AT_FMAX[spec.arch] * m.opps[-1].khz / 1e6
    steps = _stamped(_steps([[1400, 4200]]), [np.nan, 3000.0])     # steps 0 and 1: step 1 is the burst
    fr = cell_frontier(spec, steps, _plat([1500.0], [200_000 * per_unit + 20_000], [9000.0]), "virtual")
    want = [_own(m, 100_000 * per_unit, 20_000, 3000, 1400), _own(m, 300_000 * per_unit, 20_000, 3000, 4200)]
    assert fr.per_step == 2 and fr.clamped == 0 and fr.bound_uj == pytest.approx(np.mean(want), abs=1e-3)


def test_the_idle_before_a_step_is_its_signal_minus_the_previous_done_of_its_repeat_and_agent():
    from harness.analysis.steps import idle_before
    rep, agent, step = np.array([0, 0, 0, 1, 1, 0]), np.array([0, 0, 1, 0, 0, 0]), np.array([5, 6, 5, 5, 6, 7])
    signal, done = np.array([100, 300, 150, 1000, 1200, 520]), np.array([200, 500, 250, 1100, 1150, 600])
    out = idle_before(rep, agent, step, signal, done)
    assert np.isnan(out[0]) and np.isnan(out[2]) and np.isnan(out[3])    # first of repeat 0 / agent 1 / repeat 1
    assert out[1] == 100 and out[4] == 100 and out[5] == 20               # step 7 after step 6 (done 500)


def test_every_committed_frontier_is_at_or_below_what_its_cells_spent():
    """The bound is a lower bound: no committed record's repeat spent less than its bound."""
    import json

    from harness import paths
    seen = 0
    for f in (paths.REPO_ROOT / "results" / "examples").rglob("result.json"):
        fr = (json.loads(f.read_text()).get("platform") or {}).get("frontier")
        if fr:
            seen += 1
            assert max(fr["eta_by_repeat"]) <= 1.0, f
    assert seen >= 40


def test_the_frontier_curve_passes_through_each_example_cells_bound():
    """The report's bound curve, from the record alone (its spec's power model, its frontier figures),
    gives back the record's bound_uj at the cell's latency, and no less energy at a longer one than the
    idle floor allows."""
    from harness import paths, records
    from harness.analysis.efficiency import frontier_curve, record_model
    from harness.records import CellResult

    seen = 0
    for p in sorted((paths.REPO_ROOT / "results" / "examples").glob("*/*/result.json")):
        rec = records.read(p, CellResult)
        f = rec.platform.frontier if rec.platform else None
        if f is None:
            continue
        at, slower = frontier_curve(record_model(rec.spec), f, [f.latency_us, 2 * f.latency_us])
        assert at == pytest.approx(f.bound_uj, rel=1e-4), rec.cell
        assert slower is not None and 0 < slower <= at * (1 + 1e-9)
        seen += 1
    assert seen >= 10
