"""The stock -> floor gap closed by a treatment, on synthetic records with known answers: cells are
matched by arch and matrix axes, told apart by variant, and failed or unusable cells are named."""

import json

import numpy as np
import pytest

from harness import records
from harness.analysis.compare import compare
from harness.analysis.steps import PARSED_HEADER
from harness.cli import main
from harness.records import CellResult, PlatformSummary, RunIndex, StepStats

STATS = StepStats(steps=1, wake_p50_us=1, wake_p99_us=1, wake_p999_us=1, step_p50_us=1, step_p99_us=1,
                  compute_p50_us=1, compute_mean_us=1, step_p50_repeat_cv=0)


def make_cell(run, arch, variant, step_us, axes=None, status="ok", energy=(100.0, 102.0), repeats=1):
    """A cell record with its steps.csv; the steps are split evenly over `repeats`."""
    axes = axes or {}
    cid = "-".join([arch, variant] + [f"{k.split('.')[-1]}_{v}" for k, v in axes.items()])
    d = run / cid
    d.mkdir(parents=True)
    per = len(step_us) // repeats
    lines = [PARSED_HEADER] + [f"{min(i // per, repeats - 1)},0,{i},1000,10,{s:.3f},{s - 20:.3f},1,0"
                               for i, s in enumerate(step_us)]
    (d / records.CELL_STEPS).write_text("\n".join(lines) + "\n")
    plat = PlatformSummary(energy_uj=1, energy_per_step_uj=float(np.mean(energy)),
                           energy_per_step_by_repeat_uj=list(energy), avg_power_mw=1, elapsed_s=1,
                           active_fraction=0.5, freq_residency={}, idle_residency={}, idle_entries={})
    rec = CellResult(experiment="e", run_id=run.name, cell=cid, arch=arch, variant=variant, axes=axes,
                     status=status, reason="" if status == "ok" else "guest timed out during the workload",
                     failure=None if status == "ok" else "hang", spec={}, repeats=1,
                     stats=STATS if status == "ok" else None, platform=plat if status == "ok" else None)
    records.write(d / records.CELL_RESULT, rec)
    return cid


def write_index(run, ids):
    idx = RunIndex(experiment="e", run_id=run.name, experiment_sha256="0", cells_total=len(ids))
    for cid in ids:
        r = records.read(run / cid / records.CELL_RESULT, CellResult)
        idx.cells[cid] = records.CellEntry(arch=r.arch, variant=r.variant, axes=r.axes, status=r.status,
                                           finished=r.finished)
    records.write(run / records.RUN_INDEX, idx)


def test_gap_closed_and_energy(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = rng.normal(0, 5, 2000)
    run = tmp_path / "run"
    ids = [make_cell(run, "x86_64", "stock", 1000 + base), make_cell(run, "x86_64", "floor", 600 + base),
           make_cell(run, "x86_64", "agent", 700 + base, energy=(150.0, 153.0))]   # closes 75 % of the gap
    write_index(run, ids)
    res = compare(run, "agent").groups["x86_64"]
    g = res["gap_closed_p50"]
    assert g["value"] == pytest.approx(0.75, abs=0.01) and g["ci95_lo"] < 0.75 < g["ci95_hi"]
    assert g["ci95_hi"] - g["ci95_lo"] < 0.05
    assert res["energy_vs_stock"]["value"] == pytest.approx(151.5 / 101.0)
    assert g["level"].startswith("steps (1 repeat") and "p_value" not in g   # one repeat: said so
    assert main(["compare", str(run), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "gap closed p50" in out and "0.75" in out and "(steps only)" in out
    assert json.loads((tmp_path / "c.json").read_text())["groups"]["x86_64"]["gap_closed_p99"]["value"] > 0.5
    assert main(["compare", str(run), "--treatment", "nope"]) == 2


def test_matrix_axes_are_compared_point_by_point_and_failed_cells_are_named(tmp_path, capsys):
    """An experiment with a matrix axis: each wait gets its own stock/agent/floor triple (the
    old id-suffix matching found none); a failed agent cell leaves its point out, by name."""
    base = np.random.default_rng(5).normal(0, 2, 500)
    run = tmp_path / "run"
    ids = []
    for us, agent in ((500, 900), (2000, 650)):
        ax = {"workload.wait.us": us}
        ids += [make_cell(run, "x86_64", "stock", 1000 + base, ax), make_cell(run, "x86_64", "floor", 600 + base, ax),
                make_cell(run, "x86_64", "agent", agent + base, ax)]
    ax = {"workload.wait.us": 8000}
    ids += [make_cell(run, "x86_64", "stock", 1000 + base, ax), make_cell(run, "x86_64", "floor", 600 + base, ax),
            make_cell(run, "x86_64", "agent", 100 + base, ax, status="failed")]
    write_index(run, ids)
    res = compare(run, "agent")
    assert set(res.groups) == {"x86_64 us=500", "x86_64 us=2000"}
    assert res.groups["x86_64 us=500"]["gap_closed_p50"]["value"] == pytest.approx(0.25, abs=0.01)
    assert res.groups["x86_64 us=2000"]["gap_closed_p50"]["value"] == pytest.approx(0.875, abs=0.01)
    assert "failed: guest timed out" in res.left_out["x86_64-agent-us_8000"]
    assert "no ok agent cell" in res.left_out["x86_64-stock-us_8000"]
    assert main(["compare", str(run)]) == 0
    assert "left out x86_64-agent-us_8000: failed" in capsys.readouterr().out


def test_a_corrupt_record_is_left_out_and_the_rest_compared(tmp_path):
    base = np.random.default_rng(7).normal(0, 2, 300)
    run = tmp_path / "run"
    ids = [make_cell(run, "arm64", v, m + base) for v, m in (("stock", 1000), ("floor", 500), ("agent", 600))]
    ids.append(make_cell(run, "x86_64", "stock", 1000 + base))
    write_index(run, ids)
    p = run / "x86_64-stock" / records.CELL_RESULT
    p.write_text(p.read_text()[:100])       # truncated
    res = compare(run, "agent")
    assert set(res.groups) == {"arm64"} and "not JSON" in res.left_out["x86_64-stock"]


def repeats_with_spread(rng, mean, n_repeats=5, steps=400, spread=40.0, noise=5.0):
    """Steps of n repeats whose levels differ from boot to boot (schedutil settling elsewhere)."""
    return np.concatenate([mean + rng.normal(0, spread) + rng.normal(0, noise, steps) for _ in range(n_repeats)])


def test_intervals_cover_the_run_to_run_spread_and_p_values_use_repeats(tmp_path):
    """Resampling pooled steps treats 2000 steps as independent and gives a CI a few us wide;
    the repeats disagree by ~40 us, and the hierarchical interval says so."""
    from harness.analysis import compare as cmp
    from harness.analysis.runs import load_run

    rng = np.random.default_rng(11)
    run = tmp_path / "run"
    ids = [make_cell(run, "x86_64", "stock", repeats_with_spread(rng, 1000), repeats=5),
           make_cell(run, "x86_64", "floor", repeats_with_spread(rng, 600), repeats=5),
           make_cell(run, "x86_64", "agent", repeats_with_spread(rng, 700), repeats=5)]
    write_index(run, ids)
    loaded = load_run(run)
    stock, agent = (cmp.cell_data(c) for c in sorted(loaded.ok, key=lambda c: c.id)[1:])
    assert len(stock.repeats) == 5
    hier = cmp.relative_change(stock, agent, 50)
    pooled = cmp.CellData("pooled", stock.values, (stock.values,), stock.energy_per_step_uj)
    pooled_agent = cmp.CellData("pooled-a", agent.values, (agent.values,), agent.energy_per_step_uj)
    naive = cmp.relative_change(pooled, pooled_agent, 50)
    assert hier.level == "repeats+steps" and naive.level.startswith("steps")
    assert (hier.hi - hier.lo) > 3 * (naive.hi - naive.lo)
    assert hier.p_value == pytest.approx(2 / 252)      # 5 vs 5 repeats, all apart: the exact minimum
    same = cmp.relative_change(stock, cmp.CellData("again", stock.values, stock.repeats[::-1],
                                                   stock.energy_per_step_uj), 50)
    assert same.p_value == 1.0 and same.lo < 0 < same.hi
    g = compare(run, "agent").groups["x86_64"]["gap_closed_p50"]
    assert g["level"] == "repeats+steps" and g["p_value"] < 0.01 and g["ci95_lo"] < g["value"] < g["ci95_hi"]


def test_two_runs_compared_cell_by_cell_against_the_first(tmp_path, capsys):
    """compare RUN_A RUN_B: each cell of A with its match in B, the change with a CI and a p-value
    (mmtests compare-kernels style); a cell B lacks is named."""
    rng = np.random.default_rng(2)
    a, b = tmp_path / "kernel-a", tmp_path / "kernel-b"
    ids_a = [make_cell(a, "x86_64", "stock", repeats_with_spread(rng, 1000, spread=5), repeats=4),
             make_cell(a, "x86_64", "agent", repeats_with_spread(rng, 800, spread=5), repeats=4)]
    ids_b = [make_cell(b, "x86_64", "stock", repeats_with_spread(rng, 1000, spread=5), repeats=4)]
    write_index(a, ids_a)
    write_index(b, ids_b)
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "kernel-b: p50 change" in out and "p=" in out
    assert "left out kernel-b/x86_64-agent: no ok cell matching kernel-a/x86_64-agent" in out
    res = json.loads((tmp_path / "c.json").read_text())
    ch = res["groups"]["x86_64 stock"]["runs"]["kernel-b"]["p50_change"]
    assert ch["ci95_lo"] < 0 < ch["ci95_hi"] and abs(ch["value"]) < 0.02 and ch["p_value"] > 0.05
    faster = tmp_path / "kernel-c"
    write_index(faster, [make_cell(faster, "x86_64", "stock", repeats_with_spread(rng, 900, spread=5), repeats=4)])
    from harness.analysis.compare import compare_runs
    from harness.analysis.runs import load_run

    res = compare_runs([load_run(a), load_run(faster)])
    ch = res.groups["x86_64 stock"]["runs"]["kernel-c"]["p50_change"]
    assert ch["value"] == pytest.approx(-0.10, abs=0.02) and ch["ci95_hi"] < 0 and ch["p_value"] < 0.05


def test_runs_with_the_same_name_are_told_apart_by_path_and_wake_latency_can_be_compared(tmp_path, capsys):
    """Two run directories named alike (a committed example and a fresh run of it) are named by
    their paths in the table, which shows the change, not a blank; --metric wake compares the
    wakeup latency column."""
    rng = np.random.default_rng(5)
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    write_index(a, [make_cell(a, "x86_64", "stock", repeats_with_spread(rng, 1000, spread=5), repeats=4)])
    write_index(b, [make_cell(b, "x86_64", "stock", repeats_with_spread(rng, 800, spread=5), repeats=4)])
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "x86_64 stock" in line)
    assert "%" in row and " - " not in row, out
    res = json.loads((tmp_path / "c.json").read_text())
    change = res["groups"]["x86_64 stock"]["runs"][str(b)]["p50_change"]["value"]
    assert change == pytest.approx(-0.2, abs=0.03)
    assert main(["compare", str(a), str(b), "--metric", "wake", "--json", str(tmp_path / "w.json")]) == 0
    assert "wake latency against" in capsys.readouterr().out
    wake = json.loads((tmp_path / "w.json").read_text())["groups"]["x86_64 stock"]
    assert wake["metric"] == "wake" and "wake_p50_us" in wake["baseline"]

