"""The simulated DVFS/cpuidle platform, observed in booted guests for every preset
(experiments/sim_platform.yaml): a frequency costs what it should, for long and short runs; a deep
idle state costs its exit latency; the meter integrates the energy model and agrees with the
frontier bound; and a wakeup is handled only after the exit, so the agent reaches its boosted
frequency exit + transition after the signal. 24 cells per arch: nox -s tests-measure (x86_64)
and nox -s tests-arm64."""

import pytest

from harness import paths
from harness.analysis.calibration import Calibration, calibrations
from harness.runner import Runner
from harness.spec import load_experiment

pytestmark = [pytest.mark.kernel, pytest.mark.measurement]


def run_calibration(tmp_path, arch) -> list[Calibration]:
    text = (paths.EXPERIMENTS_DIR / "sim_platform.yaml").read_text()
    text = text.replace("arch: [x86_64, arm64]", f"arch: [{arch}]")
    exp = tmp_path / "sim_platform.yaml"
    exp.write_text(text)
    out = Runner(load_experiment(exp), tmp_path / "results").run()
    assert all(o.status == "ok" for o in out), [(o.cell.id, o.reason) for o in out]
    return calibrations(sorted({o.dir.parent for o in out}))


def check_frequency_cost(c: Calibration):
    r = c.ratios
    assert r["mid/max"].got == pytest.approx(r["mid/max"].want, rel=0.03), r
    # the lowest OPP: x86_64 with rk3399-a72 is 4.4 % slow at 408 MHz (README, not understood)
    assert r["min/max"].got == pytest.approx(r["min/max"].want, rel=0.05), r
    assert c.short_max_us <= 50, c.short_max_us
    assert r["short min/max"].got == pytest.approx(r["short min/max"].want, rel=0.10), r


def check_exit_cost(c: Calibration):
    assert c.exit_cost.got == pytest.approx(c.exit_cost.want, rel=0.05), c.exit_cost
    deepest, shallowest = c.deep_entries
    assert deepest > 100 and shallowest == 0, c.deep_entries


def check_energy(c: Calibration):
    """The meter integrates the model: on a fixed OPP with one idle state, the agent CPU's energy is
    active power x active time + the state's power x idle time; and the frontier bound over that
    state is what the cell spent (eta 1)."""
    assert len(c.meter) >= 3 and all(m == pytest.approx(1.0, rel=0.05) for m in c.meter), c.meter
    assert len(c.own_eta) == 3 and all(e == pytest.approx(1.0, abs=0.03) for e in c.own_eta), c.own_eta
    # the bound over every state and OPP can only be lower
    assert all(0 < e <= 1.0 + 1e-6 for e in c.eta), c.eta


def check_order(c: Calibration):
    """Wake IPI -> agent at its boosted frequency = exit + transition, not the larger of the two.
    The boost is requested only after the exit; a run that woke at a low OPP runs at it until the
    transition requested then completes, so it lasts that much longer than a run that woke at fmax
    (schedutil lowers the idle CPU's frequency only at some of the waits)."""
    o = c.order
    assert o is not None and o.low_runs >= 10 and o.high_runs >= 5, o
    assert o.request_after_signal_us >= 0.95 * o.exit_us, o
    # medians: a run now and then is cut short (the agent switched out for a moment)
    assert o.low_run_us == pytest.approx(o.want_low_run_us, rel=0.10), o
    assert o.low_run_us > o.high_run_us + 0.5 * 300 * (1 - o.max_low_khz / o.fmax_khz), \
        "the transition must not hide behind the exit"


def check_calibration(cals: list[Calibration]):
    assert {c.preset for c in cals} == {"x86-skl-client", "rk3399-a72", "rk3399-a53"}
    for c in cals:
        assert c.sim.preset == c.preset
        check_frequency_cost(c)
        check_exit_cost(c)
        check_energy(c)
        check_order(c)
        assert c.cmdline_has_coeff


def test_sim_platform_x86_64(tmp_path):
    check_calibration(run_calibration(tmp_path, "x86_64"))


@pytest.mark.arm64
def test_sim_platform_arm64(tmp_path):
    check_calibration(run_calibration(tmp_path, "arm64"))
