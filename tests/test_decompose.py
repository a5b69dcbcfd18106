"""The per-step decomposition (harness/analysis/decompose.py): exact parts on synthetic events whose
answer is known, then on real probe output of recorded guests (tests/fixtures/decomposition, made
by `python scripts/record_guest_fixtures.py --fixture decomposition`), where the parts must sum to
the step within the stated tolerance at p50."""

from pathlib import Path

import numpy as np
import pytest

from harness import records
from harness.analysis import decompose
from harness.analysis.decompose import PARTS, PlatformFacts
from harness.guest import protocol
from harness.guest.fake import FakeBackend, FakeKernels
from harness.probes.dvfs_ramp import Run
from harness.probes.wake_path import WakePath
from harness.runner import Runner
from harness.spec import load_experiment

FIXTURES = Path(__file__).parent / "fixtures" / "decomposition"
FACTS = PlatformFacts(fmax_khz=1_000_000, exit_ns={0: 0, 1: 1_000, 2: 30_000}, transition_ns=0, unit_ns=1.0)


def _cols(*steps):
    """steps: (signal, wake, phases, done) of agent 0."""
    a = np.array(steps, dtype=np.int64)
    return {"agent": np.zeros(len(a), dtype=np.int64), "step": np.arange(len(a)), "signal_ns": a[:, 0],
            "wake_ns": a[:, 1], "phases_ns": a[:, 2], "done_ns": a[:, 3]}


def test_an_ipi_wakeup_into_an_idle_cpu_splits_exactly():
    # world on CPU 0 signals at 1.000 ms and wakes the agent at 1.010; CPU 1 idles in state 2 (30 us
    # exit) until 1.050, runs a 3 us softirq, the agent runs at 1.060 and stamps its wakeup at 1.062.
    # 100000 units at 1 ns/unit: 100 us of work at fmax, done at half speed for 100 us, then at fmax.
    cols = _cols((1_000_000, 1_062_000, 1_062_000, 1_212_000))
    runs = [Run(7, 1, 1_010_000, 1_060_000, 1_300_000, None, None, None, 0, None)]
    wp = WakePath(idle={1: [(500_000, 1_050_000, 2)]}, softirq={1: [(1_052_000, 1_055_000)]},
                  wakings=[(7, 0, 1_010_000)], agents={7: 0})
    freq = {1: [(1_162_000, 1_000_000)]}
    sp = decompose.decompose(cols, runs, freq, wp, {1: 500_000}, FACTS, np.array([100_000.0]))
    got = {p: sp.parts[p][0] for p in PARTS}
    assert got == {"irq_to_wakeup": 10_000, "cstate_exit": 30_000, "runqueue": 19_000, "deferred": 3_000,
                   "phases": 0, "preempted": 0, "dvfs_deficit": 50_000, "compute": 100_000}
    assert sp.sum_ns[0] == sp.step_ns[0] == 212_000 and sp.woken[0] and sp.cstate[0]


def test_a_timer_on_the_idle_cpu_spends_the_exit_before_the_waking_and_preemption_is_its_own_part():
    # a timer due at 2.000 ms on CPU 1 (idle in state 1: 1 us exit) wakes the agent from CPU 1 at
    # 2.004; it runs at 2.006, is preempted for 20 us in the middle of its compute, at fmax throughout
    cols = _cols((2_000_000, 2_007_000, 2_008_000, 2_078_000))
    runs = [Run(9, 1, 2_004_000, 2_006_000, 2_040_000, None, None, None, 0, None),
            Run(9, 1, None, 2_060_000, 2_100_000, None, None, None, 0, None)]
    wp = WakePath(idle={1: [(1_500_000, 2_005_000, 1)]}, wakings=[(9, 1, 2_004_000)], agents={9: 0})
    sp = decompose.decompose(cols, runs, {}, wp, {1: 1_000_000}, FACTS, np.array([50_000.0]))
    got = {p: sp.parts[p][0] for p in PARTS}
    assert got["cstate_exit"] == 1_000 and got["irq_to_wakeup"] == 3_000 and got["runqueue"] == 3_000
    assert got["phases"] == 1_000 and got["preempted"] == 20_000 and got["dvfs_deficit"] == 0
    assert got["compute"] == 50_000 and sp.sum_ns[0] == sp.step_ns[0]


def test_a_wrong_frequency_timeline_fails_the_sum_check():
    """The check can fail: compute is units x the calibration, independent of the timeline, so a
    timeline that says fmax while the CPU ran at half speed leaves the deficit out of the sum."""
    cols = _cols(*[(t, t + 5_000, t + 5_000, t + 205_000) for t in range(1_000_000, 21_000_000, 1_000_000)])
    runs = [Run(3, 1, t + 1_000, t + 4_000, t + 300_000, None, None, None, 0, None) for t in cols["signal_ns"]]
    wp = WakePath(wakings=[(3, 0, int(t) + 1_000) for t in cols["signal_ns"]], agents={3: 0})
    units = np.full(20, 100_000.0)             # 100 us at fmax that took 200 us: half speed
    right = decompose.summarise(decompose.decompose(cols, runs, {}, wp, {1: 500_000}, FACTS, units), True)
    wrong = decompose.summarise(decompose.decompose(cols, runs, {}, wp, {1: 1_000_000}, FACTS, units), True)
    assert right.within_tolerance and right.sum_ratio_p50 == pytest.approx(1.0)
    assert right.mean_us["dvfs_deficit"] == pytest.approx(100.0)
    assert not wrong.within_tolerance and wrong.sum_ratio_p50 == pytest.approx(105 / 205)


def test_a_step_no_run_covers_is_left_out_not_guessed():
    cols = _cols((1_000_000, 1_010_000, 1_010_000, 1_020_000), (2_000_000, 2_010_000, 2_010_000, 2_020_000))
    runs = [Run(3, 1, 1_001_000, 1_002_000, 1_030_000, None, None, None, 0, None)]
    sp = decompose.decompose(cols, runs, {}, WakePath(agents={3: 0}), {}, FACTS, np.full(2, 10_000.0))
    assert sp.decomposed.tolist() == [True, False] and np.isnan(sp.parts["compute"][1])
    s = decompose.summarise(sp, True)
    assert (s.steps, s.decomposed, s.woken) == (2, 1, 1)


# -- real probe output ------------------------------------------------------------------------------

VARIANTS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []


def _replay(tmp_path, variant):
    le = load_experiment(FIXTURES / "recording.yaml")
    return Runner(le, tmp_path / "results", only=[f"x86_64-{variant}"],
                  backend=FakeBackend({"x86_64": FIXTURES / variant}), builder=FakeKernels(tmp_path / "kernels"),
                  cache=_cache(tmp_path))


def _cache(tmp_path):
    from harness.kernel.cache import BuildCache
    return BuildCache(tmp_path / "cache")


def test_the_fixtures_are_there():
    assert VARIANTS == ["futex", "timer"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_recorded_script_is_the_one_rendered_today(tmp_path, variant):
    (plan,) = _replay(tmp_path, variant).plan()
    assert (FIXTURES / variant / protocol.GUEST_SCRIPT).read_text() == plan.script


@pytest.mark.parametrize("variant", VARIANTS)
def test_on_real_probe_output_the_parts_sum_to_the_step_within_tolerance_at_p50(tmp_path, variant):
    (out,) = _replay(tmp_path, variant).run()
    assert out.status == "ok", out.reason
    dc = out.record.decomposition
    assert dc.compute_source == "calibration"            # compute is independent of the timeline
    assert dc.decomposed >= 0.95 * dc.steps
    # a periodic step that overran its period finds the next expiry already passed: no sleep, no wakeup
    assert dc.woken >= (0.95 if variant == "futex" else 0.6) * dc.steps
    assert abs(dc.sum_ratio_p50 - 1) <= 0.05 and dc.within_tolerance
    # the per-step file: every decomposed step's parts sum to what the record's means say
    table = np.genfromtxt(out.dir / records.CELL_DECOMPOSITION, delimiter=",", names=True)
    ok = np.isfinite(table["sum_us"])
    ratio = table["sum_us"][ok] / table["step_us"][ok]
    assert np.percentile(ratio, 50) == pytest.approx(dc.sum_ratio_p50, abs=1e-3)
    assert sum(dc.mean_us.values()) == pytest.approx(table["sum_us"][ok].mean(), rel=1e-3)
    assert all(np.nanmin(table[f"{p}_us"]) >= -1.0 for p in PARTS if p != "dvfs_deficit")
    # what each wake path is: the IPI into an idle CPU pays its exit after the waking, the timer before
    assert dc.cstate_exits >= 0.5 * dc.woken
    assert dc.mean_us["cstate_exit"] > 50.0          # x86-skl-client's deeper states exit in 85-890 us
    table_woken = table["woken"] == 1
    if variant == "futex":   # the world's futex wake is a syscall away: the rest of the path is the IPI's
        assert np.median(table["irq_to_wakeup_us"][table_woken]) < 20
    else:                    # the CPU's own timer: the exit is spent before the waking, on the timer's side
        assert np.median(table["runqueue_us"][table_woken]) < np.median(table["irq_to_wakeup_us"][table_woken])
    assert (out.dir.parent / records.SUMMARY).read_text().count("# decomposition") == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cli_decomposes_again_from_the_stored_share(tmp_path, variant, capsys):
    from harness.cli import main

    (out,) = _replay(tmp_path, variant).run()
    first = (out.dir / records.CELL_DECOMPOSITION).read_text()
    (out.dir / records.CELL_DECOMPOSITION).unlink()
    assert main(["decompose", str(out.dir.parent)]) == 0
    assert (out.dir / records.CELL_DECOMPOSITION).read_text() == first
    assert "decomposition" in capsys.readouterr().out


def test_a_decomposition_that_cannot_be_made_leaves_the_cell_ok(tmp_path, monkeypatch):
    """It is an analysis of stored data: a failure of it is a note, and the cell keeps its record."""
    def broken(*a, **k):
        raise ValueError("no runs")
    monkeypatch.setattr(decompose, "from_share", broken)
    (out,) = _replay(tmp_path, "futex").run()
    assert out.status == "ok" and out.record.decomposition is None
    assert not (out.dir / records.CELL_DECOMPOSITION).exists()
