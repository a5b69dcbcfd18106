"""The slowpath tax per 10,000 steps (harness/analysis/tax.py): on the committed quick runs of two
agent profiles (real records), then on small synthetic runs for what those do not have (a per-step
decomposition, a run without a floor) and on bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_compare import make_cell, write_index

from harness import paths, records
from harness.analysis import decompose, tax
from harness.analysis.decompose import PARTS, StepParts
from harness.cli import main
from harness.records import CellResult

EXAMPLES = paths.REPO_ROOT / "results" / "examples"
TOKEN, CONTROL = EXAMPLES / "agents-token-stream-quick-x86", EXAMPLES / "agents-control-loop-quick-x86"
SUITE = EXAMPLES / "suite-quick"       # the quick suite, both arches, probed: the README's tables
PROFILES = ("token_stream", "tool_call", "retrieval", "control_loop", "contention", "multi_agent")


@pytest.fixture(scope="module")
def examples() -> tax.TaxTable:
    return tax.tax([TOKEN, CONTROL])


def _cells(table: tax.TaxTable, profile: str) -> dict[str, tax.CellTax]:
    (g,) = [g for g in table.groups if g.profile == profile]
    return {c.variant: c for c in g.cells}


def _steps_us(run: Path, cell: str) -> np.ndarray:
    return np.genfromtxt(run / cell / records.CELL_STEPS, delimiter=",", names=True)["step_us"]


def test_token_stream_stock_pays_more_than_the_window_and_the_window_more_than_the_floor(examples):
    c = _cells(examples, "agents_token_stream_quick")
    assert list(c) == ["stock", "agent", "floor"]
    for what in ("mean_tax", "p50_tax"):
        stock, agent = getattr(c["stock"], what), getattr(c["agent"], what)
        assert stock.lo > agent.hi and agent.lo > 0, what       # apart, and the window still above the floor
    # the figures are the stored steps' own, x 10,000 in seconds: computed here again from steps.csv
    floor = _steps_us(TOKEN, "x86_64-floor")
    stock = _steps_us(TOKEN, "x86_64-stock")
    assert c["stock"].mean_tax.value == pytest.approx((stock.mean() - floor.mean()) * 1e4 / 1e6, rel=1e-12)
    stats = {v: records.read(TOKEN / f"x86_64-{v}" / records.CELL_RESULT, CellResult).stats for v in c}
    for v in ("stock", "agent"):
        assert c[v].p50_tax.value == pytest.approx((stats[v].step_p50_us - stats["floor"].step_p50_us) / 100,
                                                   abs=1e-6)
        assert c[v].repeats == 2 and c[v].mean_tax.level == "repeats+steps"


def test_each_cell_states_its_energy_per_step_and_its_ratio_to_stock_from_the_measured_repeats(examples):
    """A tax is only worth its energy: the record's energy per step (mean over repeats) beside it, and
    the ratio to the group's stock cell, with intervals; the markdown carries both columns."""
    c = _cells(examples, "agents_token_stream_quick")
    plat = {v: records.read(TOKEN / f"x86_64-{v}" / records.CELL_RESULT, CellResult).platform for v in c}
    for v in c:
        e = plat[v].energy_per_step_by_repeat_uj
        assert len(e) == 2 and c[v].energy_uj.value == pytest.approx(np.mean(e), rel=1e-12)
        assert min(e) <= c[v].energy_uj.lo <= c[v].energy_uj.value <= c[v].energy_uj.hi <= max(e)
        assert c[v].meter == plat[v].meter
    ratio = c["agent"].energy_vs_stock
    assert ratio.value == pytest.approx(np.mean(plat["agent"].energy_per_step_by_repeat_uj)
                                        / np.mean(plat["stock"].energy_per_step_by_repeat_uj), rel=1e-12)
    assert ratio.value > 2 and ratio.lo <= ratio.value <= ratio.hi      # the window pays for its tax cut
    assert c["stock"].energy_vs_stock.value == pytest.approx(1.0)
    head, body = tax.rows(examples)
    assert head[-2:] == ["energy / step, mJ [95 % CI]", "energy vs stock [95 % CI]"]
    (agent_row,) = [r for r in body if r[0] == "agents_token_stream_quick" and r[2] == "agent"]
    assert agent_row[-2].startswith(f"{c['agent'].energy_uj.value / 1e3:.3f} [") and agent_row[-1].startswith(
        f"{ratio.value:.2f} [")
    assert [r[-1] for r in body if r[2] == "stock"] == ["-", "-"]


def test_every_interval_holds_its_estimate_and_the_floor_against_itself_is_exactly_zero(examples):
    for g in examples.groups:
        for c in g.cells:
            for e in (c.mean_tax, c.p50_tax, c.miss_fraction):
                if e is not None:
                    assert e.lo <= e.value <= e.hi, (g.profile, c.variant)
        (floor,) = [c for c in g.cells if c.cell == g.floor]
        assert floor.variant == "floor"
        for e in (floor.mean_tax, floor.p50_tax):
            assert (e.value, e.lo, e.hi) == (0.0, 0.0, 0.0)


def test_control_loop_p50_tax_and_deadline_misses(examples):
    c = _cells(examples, "agents_control_loop_quick")
    assert c["stock"].p50_tax.value > c["agent"].p50_tax.value > 0
    assert c["stock"].p50_tax.lo > 0 and c["agent"].p50_tax.lo > 0
    # the mean is the window's tails (late timer interrupts under TCG): both pay, no order claimed
    assert c["stock"].mean_tax.lo > 0 and c["agent"].mean_tax.lo > 0
    # the miss fraction from steps.csv (step_us > period) is the loop's own count, as the record holds it
    for v, cell in c.items():
        recorded = records.read(CONTROL / f"x86_64-{v}" / records.CELL_RESULT, CellResult).stats
        assert cell.miss_fraction.value == pytest.approx(recorded.deadline_miss_fraction, abs=1e-12)
        assert not cell.notes
    assert (c["floor"].miss_fraction.lo, c["floor"].miss_fraction.hi) == (0.0, 0.0)
    assert c["agent"].miss_fraction.value > c["stock"].miss_fraction.value > 0
    assert all(cell.miss_fraction is None for cell in _cells(examples, "agents_token_stream_quick").values())


def test_quick_runs_say_they_have_no_split_and_what_their_floor_was(examples):
    for g in examples.groups:
        assert all(c.split is None for c in g.cells)
        assert any("no per-step decomposition" in n for n in g.notes)
        assert "idle=poll" in g.floor_setting        # the floor of those commits, from the records
    md = tax.markdown(examples)
    assert "Split into" not in md and "floor x86_64-floor (governor performance, idle=poll)" in md


# -- synthetic runs ---------------------------------------------------------------------------------

def _decomposed(rng, steps_us: np.ndarray, parts_us: dict[str, float], compute_error: float = 1.0):
    """A Decomposition of these steps, made by decompose.summarise: the fixed parts given, the DVFS
    deficit what is left; compute_error scales compute after the fact (a wrong calibration)."""
    step_ns = np.round(steps_us * 1000).astype(np.int64)
    n = len(step_ns)
    fixed = {p: np.full(n, v * 1000.0) + rng.uniform(-500, 500, n) for p, v in parts_us.items()}
    parts = {p: fixed.get(p, np.zeros(n)) for p in PARTS}
    parts["dvfs_deficit"] = step_ns - sum(parts[p] for p in PARTS if p != "dvfs_deficit")
    parts["compute"] = parts["compute"] * compute_error
    sp = StepParts(agent=np.zeros(n, np.int64), step=np.arange(n), step_ns=step_ns, parts=parts,
                   decomposed=np.ones(n, bool), woken=np.ones(n, bool), cstate=parts["cstate_exit"] > 0)
    return decompose.summarise(sp, calibrated=True)


def _set_decomposition(run: Path, cid: str, dc) -> None:
    p = run / cid / records.CELL_RESULT
    records.write(p, records.read(p, CellResult).model_copy(update={"decomposition": dc}))


def test_the_split_adds_up_to_the_tax_within_the_decompositions_tolerance_and_can_fail(tmp_path):
    rng = np.random.default_rng(4)
    run = tmp_path / "run"
    steps = {v: np.round(m + rng.normal(0, 30, 600), 3) for v, m in
             (("stock", 1800), ("agent", 300), ("floor", 200), ("teo", 1500))}
    ids = [make_cell(run, "x86_64", v, s, repeats=3) for v, s in steps.items()]
    write_index(run, ids)
    fixed = {"stock": {"irq_to_wakeup": 3, "cstate_exit": 880, "runqueue": 50, "compute": 180},
             "agent": {"irq_to_wakeup": 3, "cstate_exit": 2, "runqueue": 20, "compute": 180},
             "floor": {"irq_to_wakeup": 2, "cstate_exit": 2, "runqueue": 10, "compute": 180},
             "teo": {"irq_to_wakeup": 3, "cstate_exit": 300, "runqueue": 50, "compute": 180}}
    for v, cid in zip(steps, ids, strict=True):   # teo's calibration off: compute 3x what it was
        _set_decomposition(run, cid, _decomposed(rng, steps[v], fixed[v], 3.0 if v == "teo" else 1.0))
    (g,) = tax.tax([run]).groups
    c = {x.variant: x for x in g.cells}
    assert list(c) == ["stock", "agent", "teo", "floor"]
    dc = {v: records.read(run / f"x86_64-{v}" / records.CELL_RESULT, CellResult).decomposition for v in c}
    for v in ("stock", "agent"):
        s = c[v].split
        assert set(s.parts) == set(PARTS) and s.tolerance == decompose.TOLERANCE
        want = (dc[v].mean_us["cstate_exit"] - dc["floor"].mean_us["cstate_exit"]) / 100
        assert s.parts["cstate_exit"] == pytest.approx(want)
        # traced steps = measured steps here: the parts and the residual are the mean-step tax exactly
        assert s.total + s.residual == pytest.approx(c[v].mean_tax.value, rel=1e-9)
        assert s.traced_tax == pytest.approx(c[v].mean_tax.value, rel=1e-9)
        assert abs(s.total - c[v].mean_tax.value) <= s.bound and s.within_tolerance
        assert s.bound == pytest.approx(0.05 * (c[v].step_mean_us + c["floor"].step_mean_us) / 100)
    assert c["stock"].split.parts["cstate_exit"] == pytest.approx(8.78, abs=0.01)   # (880 - 2) us x 10,000
    assert c["floor"].split.total == 0.0 and c["floor"].split.within_tolerance
    bad = c["teo"].split    # compute counted 3x: the sum overshoots the tax by 2 x 180 us a step
    assert not bad.within_tolerance and bad.total - c["teo"].mean_tax.value == pytest.approx(3.6, abs=0.05)
    assert "own sum/step check failed" in bad.note
    md = tax.markdown(tax.tax([run]))
    assert "Split into the decomposition's parts" in md and "| NO (+-" in md


def test_a_run_without_a_floor_says_so_and_makes_no_tax_up(tmp_path, capsys):
    rng = np.random.default_rng(8)
    run = tmp_path / "run"
    write_index(run, [make_cell(run, "x86_64", v, m + rng.normal(0, 5, 200)) for v, m in (("stock", 900),
                                                                                          ("agent", 300))])
    (g,) = tax.tax([run]).groups
    assert g.floor is None and all(c.mean_tax is None and c.p50_tax is None for c in g.cells)
    assert any("no ok floor cell" in n for n in g.notes)
    assert main(["tax", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no ok floor cell for x86_64 in this run (variants: stock, agent): no tax" in out


def test_one_repeat_says_its_interval_covers_the_steps_only(tmp_path):
    rng = np.random.default_rng(9)
    run = tmp_path / "run"
    write_index(run, [make_cell(run, "x86_64", v, m + rng.normal(0, 5, 300)) for v, m in (("stock", 900),
                                                                                          ("floor", 300))])
    (g,) = tax.tax([run]).groups
    assert g.cells[0].mean_tax.level.startswith("steps")
    assert "(steps only)" in tax.markdown(tax.tax([run]))


def test_a_paired_tax_on_the_same_draws_is_tighter_and_unpaired_where_the_seeds_differ(tmp_path):
    """Bursty steps (lognormal) shared by the cells: unpaired, the bursts' spread is in the interval;
    paired step by step it cancels. The point values agree (same steps, mean of differences)."""
    rng = np.random.default_rng(5)
    burst = rng.lognormal(np.log(20000), 1.0, 96)
    run = tmp_path / "run"
    cells = {"stock": burst * 1.4 + rng.normal(0, 200, 96), "agent": burst * 1.02 + rng.normal(0, 200, 96),
             "uclamp": burst * 1.2, "floor": burst}
    ids = [make_cell(run, "x86_64", v, s, repeats=3) for v, s in cells.items()]
    path = run / "x86_64-uclamp" / records.CELL_RESULT      # another seed: other bursts
    rec = records.read(path, CellResult)
    records.write(path, rec.model_copy(update={"spec": {"workload": {"seed": 7}}}))
    write_index(run, ids)
    (g,) = tax.tax([run]).groups
    c = {x.variant: x for x in g.cells}
    for v in ("stock", "agent"):
        assert c[v].paired_steps == 96 and not c[v].notes
        assert c[v].paired_tax.value == pytest.approx(c[v].mean_tax.value, rel=1e-9)
        assert c[v].paired_tax.level == "repeats+steps"
        assert c[v].paired_tax.hi - c[v].paired_tax.lo < 0.25 * (c[v].mean_tax.hi - c[v].mean_tax.lo)
    assert c["agent"].mean_tax.lo < 0 < c["agent"].paired_tax.lo       # the window's 2 %: only pairing sees it
    assert c["uclamp"].paired_tax is None and c["floor"].paired_tax is None
    assert any("seeds differ (7 against the floor's None): not paired" in n for n in c["uclamp"].notes)


# -- the command ------------------------------------------------------------------------------------

def test_the_command_writes_the_markdown_and_json(tmp_path, capsys, examples):
    md, js = tmp_path / "tax.md", tmp_path / "tax.json"
    assert main(["tax", str(TOKEN), str(CONTROL), "-o", str(md), "--json", str(js)]) == 0
    assert "slowpath tax" in capsys.readouterr().out
    assert md.read_text() == tax.markdown(examples)
    d = json.loads(js.read_text())
    assert d["unit"] == "s per 10000 steps" and len(d["groups"]) == 2
    assert d["groups"][0]["cells"][0]["mean_tax_s"]["value"] == examples.groups[0].cells[0].mean_tax.value
    assert d["groups"][0]["cells"][1]["energy_vs_stock"]["value"] == examples.groups[0].cells[1].energy_vs_stock.value


def test_the_readme_quotes_the_tax_of_the_committed_quick_suite():
    """The README's headline tables (both arches, split, energy) are the tool's output on the committed
    quick suite: regenerate them with the command the README gives when the data change."""
    runs = sorted(d for d in SUITE.iterdir() if d.is_dir())
    assert [d.name for d in runs] == sorted(p.replace("_", "-") for p in PROFILES)
    result = tax.tax(runs)
    text = tax.markdown(result)
    readme = (paths.REPO_ROOT / "README.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 * len(PROFILES) * 3 + 2 + 2 * len(PROFILES) * 3      # every cell, split too
    missing = [line for line in table if line not in readme]
    assert not missing, missing[:3]
    assert {g.label for g in result.groups} == {"x86_64", "arm64"}
    for g in result.groups:
        assert all(c.split is not None and c.energy_uj is not None and c.meter == "steps" for c in g.cells), g.profile


def test_bad_input_exits_2_naming_the_file_and_writes_nothing(tmp_path, capsys):
    rng = np.random.default_rng(1)
    run = tmp_path / "broken"
    write_index(run, [make_cell(run, "x86_64", "floor", 300 + rng.normal(0, 5, 100))])
    rec = run / "x86_64-floor" / records.CELL_RESULT
    rec.write_text(rec.read_text()[:80])      # truncated
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    assert main(["tax", str(run), "-o", str(md), "--json", str(js)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "x86_64-floor" in err and "result.json" in err
    assert main(["tax", str(tmp_path / "nowhere"), "--json", str(js)]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(["tax", str(TOKEN), "-o", str(tmp_path / "t.txt")]) == 2
    assert "t.txt" in capsys.readouterr().err
    assert not md.exists() and not js.exists() and not (tmp_path / "t.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]       # no temporary file left either


def test_a_fan_out_loop_is_taxed_on_its_fan_in_the_slowest_agent_of_each_step():
    """multi_agent's orchestrator waits for the last of its 4 agents: the fan-in (per repeat and
    step, the largest signal -> done) is taxed beside the per-agent step, from steps.csv."""
    run = SUITE / "multi-agent"
    (g,) = [g for g in tax.tax([run]).groups if g.label == "x86_64"]
    c = {x.variant: x for x in g.cells}
    def fanin_mean(cell):
        st = np.genfromtxt(run / cell / records.CELL_STEPS, delimiter=",", names=True)
        worst = {}
        for r, k, v in zip(st["repeat"], st["step"], st["step_us"], strict=True):
            worst[(r, k)] = max(worst.get((r, k), 0.0), v)
        return np.mean(list(worst.values())), len(worst)
    floor, n = fanin_mean("x86_64-floor")
    for v in ("stock", "agent"):
        mean, m = fanin_mean(f"x86_64-{v}")
        assert m == n and c[v].fanin_mean_us == pytest.approx(mean, rel=1e-12)
        assert c[v].fanin_tax.value == pytest.approx((mean - floor) * 1e4 / 1e6, rel=1e-9)
        assert c[v].fanin_tax.lo <= c[v].fanin_tax.value <= c[v].fanin_tax.hi
        assert c[v].fanin_mean_us > c[v].step_mean_us          # the slowest of four agents
    assert (c["floor"].fanin_tax.value, c["floor"].fanin_tax.lo) == (0.0, 0.0)
    assert all(x.fanin_tax is None for g2 in tax.tax([SUITE / "token-stream"]).groups for x in g2.cells)
