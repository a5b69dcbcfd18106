"""scripts/testbox_agreement.py (issue 17): the local-VM vs test-box table of the committed run is
what the script writes from its records, pairs are found by variant name, and the verdicts."""

import importlib.util
import shutil

import pytest

from harness import paths

EXAMPLES = sorted((paths.REPO_ROOT / "results" / "examples").glob("testbox-dvfs-ramp-x86*"))
EXAMPLE = EXAMPLES[0]
_spec = importlib.util.spec_from_file_location("testbox_agreement",
                                               paths.REPO_ROOT / "scripts" / "testbox_agreement.py")
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_committed_table_is_what_the_script_writes(example):
    assert agreement.table(example).strip() == (example / "agreement.md").read_text().strip()


def test_cpu_changes_are_counted_within_repeats(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    steps = run / "x86_64-stock-local" / "steps.csv"
    lines = steps.read_text().splitlines()
    cpu = lines[0].split(",").index("cpu")
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):   # every other step of every repeat on CPU 1
        f = line.split(",")
        f[cpu] = str(i % 2)
        out.append(",".join(f))
    steps.write_text("\n".join(out) + "\n")
    row = next(r for r in agreement.table(run).splitlines() if r.startswith("| stock-local |"))
    n = len(lines) - 1
    repeats = len({line.split(",")[0] for line in lines[1:]})
    assert row.endswith(f"| {1000 * (n - repeats) / n:.1f} |"), row


def test_a_variant_without_its_box_cell_is_not_paired(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    shutil.rmtree(run / "x86_64-floor-box")
    text = agreement.table(run)
    assert "| stock | step p50 |" in text and "| floor |" not in text and "1 variant(s)" in text
    shutil.rmtree(run / "x86_64-stock-box")
    with pytest.raises(SystemExit, match="no ok pair"):
        agreement.table(run)


@pytest.mark.parametrize("lo,hi,want", [(-0.01, 0.02, "yes"), (0.0001, 0.0002, "equal"), (-0.004, -0.001, "equal"),
                                        (0.001, 0.03, "no"), (-0.2, -0.01, "no")])
def test_verdicts(lo, hi, want):
    assert agreement.verdict(lo, hi, 0.0) == want


def test_the_whole_repeat_energy_row_only_where_the_loop_metered_its_steps():
    """The run since the loop meters its own steps keeps the whole-repeat figure beside it and the
    table compares both; the earlier run (records with meter: repeat) has the one row."""
    new, old = (paths.REPO_ROOT / "results" / "examples" / n for n in ("testbox-dvfs-ramp-x86",
                                                                       "testbox-dvfs-ramp-x86-poll2s"))
    assert agreement.table(new).count("| energy/step, whole repeat |") == 2
    assert "whole repeat" not in agreement.table(old) and agreement.table(old).count("| energy/step |") == 2
