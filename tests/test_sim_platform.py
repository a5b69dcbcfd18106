"""The simulated DVFS/cpuidle platform, observed in booted guests (experiments/sim_platform.yaml,
shortened): a frequency costs what it should, a deep idle state costs its exit latency, schedutil
ramps after agent wakeups and performance does not. Six cells, tens of minutes: nox -s tests-measure
(x86_64) and nox -s tests-arm64."""

import json

import pytest

from harness import paths
from harness.runner import Runner
from harness.spec import load_experiment

pytestmark = [pytest.mark.kernel, pytest.mark.measurement]


def run_calibration(tmp_path, arch):
    text = (paths.EXPERIMENTS_DIR / "sim_platform.yaml").read_text()
    text = text.replace("arch: [x86_64, arm64]", f"arch: [{arch}]").replace("steps: 200", "steps: 100")
    text = text.replace("repeats: 2", "repeats: 1")
    exp = tmp_path / "sim_platform.yaml"
    exp.write_text(text)
    out = Runner(load_experiment(exp), tmp_path / "results").run()
    assert all(o.status == "ok" for o in out), [(o.cell.id, o.reason) for o in out]
    return {o.cell.variant: json.loads((o.dir / "result.json").read_text()) for o in out}


def check_calibration(cells):
    fmax, half = cells["fmax"]["stats"], cells["half"]["stats"]
    ratio = half["compute_p50_us"] / fmax["compute_p50_us"]
    assert ratio == pytest.approx(2.0, rel=0.05), (fmax, half)

    deep, shallow = cells["deep"]["stats"], cells["deep-off"]["stats"]
    assert deep["wake_p50_us"] - shallow["wake_p50_us"] == pytest.approx(500, rel=0.10), (deep, shallow)
    assert cells["deep"]["platform"]["idle_entries"]["DEEP"] > 100
    assert cells["deep-off"]["platform"]["idle_entries"]["DEEP"] == 0
    # idle time is counted at the states' power, active time at the OPP's
    assert cells["deep"]["platform"]["idle_residency"]["DEEP"] > 0.5

    ramp_su, ramp_perf = cells["schedutil"]["probes"]["dvfs_ramp"], cells["perf-long"]["probes"]["dvfs_ramp"]
    assert ramp_perf["runs"] >= 60 and ramp_perf["freq_changes"] == 0
    assert ramp_su["runs"] >= 60 and ramp_su["runs_with_freq_change"] >= ramp_su["runs"] // 2, ramp_su
    assert ramp_su["ramped_fraction"] > 0.5 and ramp_su["start_below_top_fraction"] > 0.5, ramp_su
    assert cells["schedutil"]["stats"]["step_p50_us"] > 1.2 * cells["perf-long"]["stats"]["step_p50_us"]
    assert cells["schedutil"]["platform"]["freq_residency"]["3200000"] < 1.0
    for c in cells.values():
        assert c["platform"]["energy_uj"] > 0 and "sim_cpufreq.opps=" in " ".join(c["kernel_cmdline"])


def test_sim_platform_x86_64(tmp_path):
    check_calibration(run_calibration(tmp_path, "x86_64"))


@pytest.mark.arm64
def test_sim_platform_arm64(tmp_path):
    check_calibration(run_calibration(tmp_path, "arm64"))
