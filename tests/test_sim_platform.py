"""The simulated DVFS/cpuidle platform, observed in booted guests for every preset
(experiments/sim_platform.yaml): a frequency costs what it should, for long and short runs; a deep
idle state costs its exit latency; the meter integrates the energy model and agrees with the
frontier bound; and a wakeup is handled only after the exit, so the agent reaches its boosted
frequency exit + transition after the signal. 24 cells per arch: nox -s tests-measure (x86_64)
and nox -s tests-arm64."""

import csv
import json

import numpy as np
import pytest

from harness import paths
from harness.analysis.efficiency import bound
from harness.platform.energy import PowerModel
from harness.runner import Runner
from harness.spec import load_experiment
from harness.spec.model import SimPlatform

pytestmark = [pytest.mark.kernel, pytest.mark.measurement]


def run_calibration(tmp_path, arch):
    text = (paths.EXPERIMENTS_DIR / "sim_platform.yaml").read_text()
    text = text.replace("arch: [x86_64, arm64]", f"arch: [{arch}]")
    exp = tmp_path / "sim_platform.yaml"
    exp.write_text(text)
    out = Runner(load_experiment(exp), tmp_path / "results").run()
    assert all(o.status == "ok" for o in out), [(o.cell.id, o.reason) for o in out]
    by_preset: dict[str, dict[str, dict]] = {}
    for o in out:
        rec = json.loads((o.dir / "result.json").read_text())
        rec["dir"] = o.dir
        by_preset.setdefault(o.cell.axes["platform.sim.preset"], {})[o.cell.variant] = rec
    return by_preset


def model_of(cell) -> tuple[PowerModel, SimPlatform]:
    sim = SimPlatform.model_validate(cell["spec"]["platform"]["sim"])
    return PowerModel.from_sim(sim), sim


def order_runs(d):
    """The dvfs_ramp records of the agent's runs that followed a wakeup."""
    with open(d / "probe-dvfs_ramp.csv") as f:
        return [r for r in csv.DictReader(f) if r["waking_ns"] and r["ramp_ns"]]


def check_frequency_cost(cells, sim):
    khz = [o.khz for o in sim.opps]
    fmax, fmid, fmin = khz[-1], khz[(len(khz) - 1) // 2], khz[0]
    t = {v: cells[v]["stats"]["compute_mean_us"] for v in ("opp-max", "opp-mid", "opp-min", "short-max", "short-min")}
    assert t["opp-mid"] / t["opp-max"] == pytest.approx(fmax / fmid, rel=0.03), t
    assert t["opp-min"] / t["opp-max"] == pytest.approx(fmax / fmin, rel=0.03), t
    assert t["short-max"] <= 50, t
    assert t["short-min"] / t["short-max"] == pytest.approx(fmax / fmin, rel=0.10), t


def check_exit_cost(cells, sim):
    real = [c for c in sim.cstates if c.name != "POLL"]
    want = real[-1].exit_latency_us - real[0].exit_latency_us
    deep, off = cells["deep"], cells["deep-off"]
    got = deep["stats"]["wake_p50_us"] - off["stats"]["wake_p50_us"]
    assert got == pytest.approx(want, rel=0.05), (got, want)
    assert deep["platform"]["idle_entries"][real[-1].name] > 100
    assert deep["platform"]["idle_entries"].get(real[0].name, 0) == 0


def check_energy(cells, model, sim):
    """The meter integrates the model: on a fixed OPP with one idle state, the agent CPU's energy is
    active power x active time + the state's power x idle time; and the frontier bound over that
    state is what the cell spent (eta 1)."""
    shallowest = next(c for c in model.states if c.name != "POLL")
    for v in ("opp-max", "opp-mid", "opp-min"):
        spec = cells[v]["spec"]["platform"]
        opp = next(o for o in model.opps if o.khz == cells[v]["guest"]["platform_requested"]["userspace_khz"])
        p = cells[v]["platform"]
        for e, act, idle in zip(p["agent_energy_per_step_by_repeat_uj"], p["agent_active_per_step_by_repeat_us"],
                                p["agent_idle_per_step_by_repeat_us"], strict=True):
            want = (model.active_uw(opp) * act + model.idle_uw(shallowest, opp) * idle) / 1e6
            assert e == pytest.approx(want, rel=0.05), (v, e, want)
        fr = p["frontier"]
        assert fr is not None, v
        # at the cell's own OPP, at no less than the time that OPP needs (the emulation's frequency
        # error, checked above, may make a cell up to 3 % faster than the OPP allows)
        least = shallowest.exit_latency_us + fr["step_cycles"] * 1000 / opp.khz
        own = bound(model, fr["step_cycles"], fr["other_cycles"], fr["period_us"], max(fr["latency_us"], least),
                    states=[shallowest.name], opps=[opp.khz])
        assert own.energy_uj / fr["energy_uj"] == pytest.approx(1.0, abs=0.03), (v, fr, own)
        assert 0 < fr["eta"] <= 1.0 + 1e-6, fr       # the bound over every state can only be lower
        assert spec["userspace_khz"] in ("max", "mid", "min")


def check_order(cells, sim):
    """Wake IPI -> agent at its boosted frequency = exit + transition, not the larger of the two.
    The boost is requested only after the exit (ramp >= exit); a run that woke at a low OPP runs
    at it until the transition requested then completes, so it lasts that much longer than a run
    that woke at fmax (schedutil lowers the idle CPU's frequency only at some of the waits)."""
    cell = cells["order"]
    real = [c for c in sim.cstates if c.name != "POLL"]
    exit_us, trans_us, fmax = real[-1].exit_latency_us, 300, sim.opps[-1].khz
    runs = order_runs(cell["dir"])
    low = [r for r in runs if r["khz_before"] and int(r["khz_before"]) < fmax and int(r["changes"]) > 0]
    high = [r for r in runs if r["khz_before"] and int(r["khz_before"]) == fmax and int(r["changes"]) == 0]
    assert len(low) >= 10 and len(high) >= 5, (len(low), len(high))
    ramp_us = np.median([int(r["ramp_ns"]) for r in low]) / 1000
    assert ramp_us >= 0.95 * exit_us, (ramp_us, exit_us)

    def run_us(r):
        return (int(r["stop_ns"]) - int(r["start_ns"])) / 1000

    w = np.median([run_us(r) for r in high])          # the run at fmax from its start
    got, want = [], []
    for r in low:
        slow = (int(r["waking_ns"]) + int(r["ramp_ns"]) - int(r["start_ns"])) / 1000 + trans_us
        f0 = int(r["khz_before"])
        got.append(run_us(r))
        want.append(slow + max(w - slow * f0 / fmax, 0.0))
    # medians: a run now and then is cut short (the agent switched out for a moment)
    assert np.median(got) == pytest.approx(np.median(want), rel=0.10), (np.median(got), np.median(want), w)
    assert np.median(got) > w + 0.5 * trans_us * (1 - max(int(r["khz_before"]) for r in low) / fmax), \
        "the transition must not hide behind the exit"


def check_calibration(by_preset):
    assert set(by_preset) == {"x86-skl-client", "rk3399-a72", "rk3399-a53"}
    for preset, cells in by_preset.items():
        model, sim = model_of(cells["opp-max"])
        assert sim.preset == preset
        check_frequency_cost(cells, sim)
        check_exit_cost(cells, sim)
        check_energy(cells, model, sim)
        check_order(cells, sim)
        for c in cells.values():
            assert "sim_cpufreq.dyn_coeff=" in " ".join(c["guest"]["kernel_cmdline"])


def test_sim_platform_x86_64(tmp_path):
    check_calibration(run_calibration(tmp_path, "x86_64"))


@pytest.mark.arm64
def test_sim_platform_arm64(tmp_path):
    check_calibration(run_calibration(tmp_path, "arm64"))
