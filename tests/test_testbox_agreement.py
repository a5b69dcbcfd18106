"""scripts/testbox_agreement.py (issue 17): the local-VM vs test-box table of the committed run is
what the script writes from its records, pairs are found by variant name, and the verdicts."""

import importlib.util
import shutil

import pytest

from harness import paths

EXAMPLE = paths.REPO_ROOT / "results" / "examples" / "testbox-dvfs-ramp-x86"
_spec = importlib.util.spec_from_file_location("testbox_agreement",
                                               paths.REPO_ROOT / "scripts" / "testbox_agreement.py")
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)


def test_the_committed_table_is_what_the_script_writes():
    assert agreement.table(EXAMPLE).strip() == (EXAMPLE / "agreement.md").read_text().strip()


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
