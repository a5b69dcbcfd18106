"""The simulated DVFS/cpuidle platform, observed in booted guests (experiments/sim_platform.yaml,
shortened): a frequency costs what it should, a deep idle state costs its exit latency, schedutil
ramps after agent wakeups and performance does not. Six cells, tens of minutes: nox -s tests-measure
(x86_64) and nox -s tests-arm64."""

import csv
import json

import numpy as np
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
    cells = {o.cell.variant: json.loads((o.dir / "result.json").read_text()) for o in out}
    for o in out:
        cells[o.cell.variant]["dir"] = o.dir
    return cells


def burst_runs(d, cut_us):
    """The dvfs_ramp records of the burst steps: runs that began with a wakeup and lasted over
    cut_us. Half a burst at fmax separates them from short steps even at fmin (fmax/4 here: a
    short step then takes 0.4 bursts at fmax)."""
    with open(d / "probe-dvfs_ramp.csv") as f:
        return [r for r in csv.DictReader(f)
                if r["waking_ns"] and int(r["stop_ns"]) - int(r["start_ns"]) > cut_us * 1000]


def burst_compute_us(d):
    """Compute time of the measured burst steps (every 4th step), from the loop's own stamps."""
    with open(d / "guest" / "steps-r0.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["warmup"] == "0" and int(r["step"]) % 4 == 3]
    return np.mean([(int(r["done_ns"]) - int(r["phases_ns"])) / 1000 for r in rows])


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

    # bursts after short steps: schedutil starts them below the top and raises the frequency after
    # the wakeup; performance never changes it; the bursts take longer under schedutil
    cut_us = 0.5 * burst_compute_us(cells["perf-long"]["dir"])    # performance: bursts at fmax
    su, perf = burst_runs(cells["schedutil"]["dir"], cut_us), burst_runs(cells["perf-long"]["dir"], cut_us)
    assert len(su) >= 15 and len(perf) >= 15, (len(su), len(perf))
    ramped = [r for r in su if int(r["changes"]) > 0 and int(r["start_khz"]) < int(r["max_khz"])]
    assert len(ramped) >= 0.8 * len(su), su
    assert all(int(r["changes"]) == 0 for r in perf) and cells["perf-long"]["probes"]["dvfs_ramp"]["freq_changes"] == 0
    assert burst_compute_us(cells["schedutil"]["dir"]) > 1.15 * burst_compute_us(cells["perf-long"]["dir"])
    assert cells["schedutil"]["platform"]["freq_residency"]["3200000"] < 1.0
    for c in cells.values():
        assert c["platform"]["energy_uj"] > 0 and "sim_cpufreq.opps=" in " ".join(c["guest"]["kernel_cmdline"])


def test_sim_platform_x86_64(tmp_path):
    check_calibration(run_calibration(tmp_path, "x86_64"))


@pytest.mark.arm64
def test_sim_platform_arm64(tmp_path):
    check_calibration(run_calibration(tmp_path, "arm64"))
