"""Record what real guests write, for the fake backend's replay tests.

    python scripts/record_guest_fixtures.py [--arch x86_64] [--arch arm64]
    python scripts/record_guest_fixtures.py --fixture decomposition

Runs tests/fixtures/guest/recording.yaml on the real backend (builds or reuses its kernels, boots
under KVM or TCG) and copies each cell's share, console log and a description of the cell into
tests/fixtures/guest/<arch>/. Re-record after changing the guest protocol (harness/guest/protocol.py
or run.sh.j2): the replay tests check that the recorded script matches the one the harness renders.
`--fixture decomposition` records tests/fixtures/decomposition/recording.yaml instead, one fixture
per variant (tests/fixtures/decomposition/<variant>/), for the per-step decomposition's test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import records  # noqa: E402
from harness.guest import fake, protocol  # noqa: E402
from harness.runner import Runner  # noqa: E402
from harness.spec import load_experiment  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "guest"
DECOMPOSITION = REPO / "tests" / "fixtures" / "decomposition"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", choices=("x86_64", "arm64"))
    ap.add_argument("--fixture", choices=("guest", "decomposition"), default="guest")
    args = ap.parse_args()
    root = FIXTURES if args.fixture == "guest" else DECOMPOSITION
    le = load_experiment(root / "recording.yaml")
    with tempfile.TemporaryDirectory(prefix="record-") as tmp:
        runner = Runner(le, Path(tmp), run_id="recording", only=args.arch or None)
        for out in runner.run():
            if out.status != "ok":
                print(f"{out.cell.id}: {out.status}: {out.reason}", file=sys.stderr)
                return 1
            dest = root / (out.cell.spec.arch if args.fixture == "guest" else out.cell.variant)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(out.dir / protocol.SHARE, dest, symlinks=True)
            shutil.copyfile(out.dir / records.console_log(0), dest / fake.RECORDING_CONSOLE)
            rec = out.record
            (dest / fake.RECORDING_META).write_text(json.dumps({
                "cell": rec.cell, "arch": rec.arch, "repeats": rec.repeats, "kernel_release": rec.kernel.release,
                "accel": rec.guest.accel, "timing": rec.guest.timing, "host": rec.guest.host,
                "stats": rec.stats.model_dump(), "recorded": rec.finished}, indent=2) + "\n")
            print(f"recorded {out.cell.id} -> {dest.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
