"""scripts/abuse_table.py, the enforcement's tables (issue 14), on committed runs: the tables they
hold are what the script writes, a cell that did not land is named, and the arithmetic."""

import importlib.util
import shutil

import numpy as np
import pytest

from harness import paths

EXAMPLES = paths.REPO_ROOT / "results" / "examples"
_spec = importlib.util.spec_from_file_location("abuse_table", paths.REPO_ROOT / "scripts" / "abuse_table.py")
abuse_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(abuse_table)


@pytest.mark.parametrize("name", ["abuse-boost", "abuse-pinned", "abuse-busy"])
def test_the_committed_tables_are_what_the_script_writes(name):
    d = EXAMPLES / name
    assert "\n".join(abuse_table.tables(d)).strip() == (d / "abuse-table.md").read_text().strip()


def test_a_cell_without_a_record_is_named_not_dropped(tmp_path):
    run = tmp_path / "abuse-boost"
    shutil.copytree(EXAMPLES / "abuse-boost", run)
    shutil.rmtree(run / "x86_64-storm")                 # planned (run.json), never recorded
    text = "\n".join(abuse_table.tables(run))
    x86 = text.split("### x86_64", 1)[1]
    assert "Cells missing or failed: storm." in x86
    assert "| open-loop (" in x86 and "| storm (" not in x86
    assert "Cells missing" not in text.split("### x86_64", 1)[0]   # arm64 has every cell it planned


def test_moved_to_top_compares_at_the_top_either_run_reached():
    unmarked = {"800000": 1.0, "3200000": 1.0}
    assert abuse_table.moved_to_top({"800000": 2.0}, unmarked) == pytest.approx(-1e6)   # none at the top
    assert abuse_table.moved_to_top({"800000": 1.0, "3200000": 3.0}, unmarked) == pytest.approx(1e6)
    assert abuse_table.moved_to_top({}, unmarked) is None


def test_t_interval_is_wider_than_the_range_for_few_pairs():
    lo, hi = abuse_table.t_interval(np.array([0.01, 0.03]))
    assert lo < 0.01 and hi > 0.03                         # t(1 df) = 12.7: two pairs tell little
    lo, hi = abuse_table.t_interval(np.array([0.02] * 5))
    assert lo == pytest.approx(0.02) and hi == pytest.approx(0.02)
    assert all(np.isnan(abuse_table.t_interval(np.array([0.02]))))
