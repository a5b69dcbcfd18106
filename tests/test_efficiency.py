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


def _with_units(steps: Steps, units) -> Steps:
    return Steps(steps.repeat, steps.agent, steps.step, steps.wait_ns, steps.wake_ns, steps.step_ns,
                 steps.compute_ns, steps.phases_ns, steps.cpu, units=np.asarray(units, dtype=float))


def test_work_that_varies_is_bounded_step_by_step_and_the_mean_of_the_bounds_is_the_cells(tmp_path):
    """A step's energy is convex in its work and latency: a cell whose steps differ is bounded step by
    step (its units, its latency, the repeat's other work and mean gap) and the bounds averaged."""
    spec = _cell(tmp_path, compute_units=200000, compute="{distribution: uniform, min_units: 50000, max_units: 150000}")
    m = PowerModel.from_sim(spec.platform.sim)
    per_unit = UNIT_NS_AT_FMAX[spec.arch] * m.opps[-1].khz / 1e6
    units = [50_000, 150_000, 100_000, 120_000]
    steps = _with_units(_steps([[900, 2600], [1500, 1700]]), units)
    cyc = [u * per_unit for u in units]
    plat = _plat(energy=[900.0, 1100.0], cycles=[sum(cyc[:2]) / 2 + 50_000, sum(cyc[2:]) / 2 + 30_000],
                 period=[6000.0, 6200.0])
    fr = cell_frontier(spec, steps, plat, "virtual")
    assert fr.per_step == 4 and fr.clamped == 0
    b0 = [bound(m, cyc[k], 50_000, 6000 - 1750 + lat, lat).energy_uj for k, lat in ((0, 900), (1, 2600))]
    b1 = [bound(m, cyc[k], 30_000, 6200 - 1600 + lat, lat).energy_uj for k, lat in ((2, 1500), (3, 1700))]
    assert fr.eta_by_repeat == [pytest.approx(np.mean(b0) / 900, abs=1e-4), pytest.approx(np.mean(b1) / 1100, abs=1e-4)]
    assert fr.bound_uj == pytest.approx((np.mean(b0) + np.mean(b1)) / 2, abs=1e-3)
    assert fr.step_cycles == pytest.approx(np.mean(cyc), abs=0.1) and fr.latency_us == 1675
    # ... not the mean step's bound
    mean_step = bound(m, np.mean(cyc[:2]), 50_000, 6000, 1750).energy_uj
    assert abs(np.mean(b0) - mean_step) > 1e-3 * mean_step
    # equal steps: the same figures as the one bound of a cell with fixed work
    fixed = _cell(tmp_path, compute_units=100_000)
    same = _steps([[1400, 1400]])
    p1 = _plat([1000.0], [100_000 * per_unit + 40_000], [5100.0])
    per_step = cell_frontier(spec, _with_units(same, [100_000, 100_000]), p1, "virtual")
    one = cell_frontier(fixed, same, p1, "virtual")
    assert one.per_step is None and per_step.bound_uj == pytest.approx(one.bound_uj, abs=1e-3)
    # a step measured faster than the fastest schedule is bounded at that schedule, and counted
    fast = cell_frontier(spec, _with_units(_steps([[1.0, 1400]]), [100_000, 100_000]), p1, "virtual")
    assert fast.clamped == 1 and fast.per_step == 2


def test_bursts_are_bounded_step_by_step_from_the_loops_rule(tmp_path):
    spec = _cell(tmp_path, burst_every=2, burst_units=300_000)
    m = PowerModel.from_sim(spec.platform.sim)
    per_unit = UNIT_NS_AT_FMAX[spec.arch] * m.opps[-1].khz / 1e6
    steps = _steps([[1400, 4200]])                       # steps 0 and 1: step 1 is the burst
    fr = cell_frontier(spec, steps, _plat([1500.0], [200_000 * per_unit + 20_000], [9000.0]), "virtual")
    want = [bound(m, 100_000 * per_unit, 20_000, 9000 - 2800 + 1400, 1400).energy_uj,
            bound(m, 300_000 * per_unit, 20_000, 9000 - 2800 + 4200, 4200).energy_uj]
    assert fr.per_step == 2 and fr.clamped == 0 and fr.bound_uj == pytest.approx(np.mean(want), abs=1e-3)


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
