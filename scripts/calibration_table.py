"""The simulated platform's calibration per preset, as the README's table, from calibration runs.

    python scripts/calibration_table.py RUN_DIR [RUN_DIR ...]

Reads the records of experiments/sim_platform.yaml runs (one per arch, or one with both) and prints
one markdown row per (preset, arch) with the figures tests/test_sim_platform.py checks
(harness/analysis/calibration.py computes them for both).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.calibration import calibrations, table  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("\n".join(table(calibrations([Path(a) for a in sys.argv[1:]]))))
