"""Wall time of the agent workload suite (experiments/agents/), profile by profile.

    python benchmarks/agent_suite.py                       # run the quick scale, one profile after another
    python benchmarks/agent_suite.py --scale full          # the full scale (hours on 2 cores)
    python benchmarks/agent_suite.py --only token_stream --only retrieval
    python benchmarks/agent_suite.py --recorded            # no run: the wall times the results directory holds
    python benchmarks/agent_suite.py --jobs 2              # two guests at a time (virtual time: same figures)
    python benchmarks/agent_suite.py --arch arm64          # one arch's cells only (default: each in turn)
    python benchmarks/agent_suite.py --recorded --tax tax.md   # and the slowpath tax of the profiles' runs

Each profile is one `python -m harness run` per arch (`--cell ARCH`: each arch's wall time is its
own; cells that already have an ok record of the same fingerprint resume, so a second call costs
nothing: --recorded reads back what the runs took).
With --jobs N, each profile's run boots up to N virtual-time guests at once (`harness run --jobs N`;
cells in real time, under KVM or MTTCG, still run one at a time): under virtual time a guest runs on
one host thread and its clock counts its own instructions, so N up to the host's cores changes wall
time, not figures. Prints a table; asserts nothing (target: the quick scale in 30 minutes on 2
cores, an arch); the suite's own wall time is printed too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import paths, records  # noqa: E402
from harness.records import RunIndex  # noqa: E402
from harness.runner import run_id_for  # noqa: E402
from harness.spec import load_experiment  # noqa: E402
from harness.spec.loader import LoadedExperiment  # noqa: E402

AGENTS = REPO / "experiments" / "agents"


def profiles(scale: str) -> list[Path]:
    return sorted((AGENTS / "quick" if scale == "quick" else AGENTS).glob("*.yaml"))


def arches(loaded: dict[Path, LoadedExperiment]) -> list[str]:
    """Every arch the files' cells run on, in the files' order."""
    out: list[str] = []
    for le in loaded.values():
        out += [a for a in le.experiment.arch if a not in out]
    return out


def recorded_wall(le: LoadedExperiment, results: Path, arch: str) -> tuple[float | None, int, int]:
    """(wall seconds of the invocations that ran this arch's cells and no other, ok cells, cells) of
    the run this experiment makes; None: no such invocation."""
    mine = {c.id for c in le.cells if c.spec.arch == arch}
    run_dir = results / run_id_for(le)
    try:
        index = records.read(run_dir / records.RUN_INDEX, RunIndex)
    except records.RecordError:
        return None, 0, len(mine)
    ran = [i for i in index.invocations if i.cells and set(i.cells) <= mine]
    wall = sum(i.wall_s or 0.0 for i in ran) if ran else None
    ok = sum(e.status == "ok" for cid, e in index.cells.items() if cid in mine)
    return wall, ok, len(mine)


def run_all(loaded: dict[Path, LoadedExperiment], arch_list: list[str], jobs: int) -> None:
    """One `harness run --jobs N --cell ARCH` per profile and arch, one after another: the runner
    boots up to N virtual-time guests at once and real-time ones (KVM, or MTTCG) one at a time,
    which whole profiles run side by side could not promise."""
    for arch in arch_list:
        for f, le in loaded.items():
            if arch not in le.experiment.arch:
                continue
            t0 = time.monotonic()
            cmd = [sys.executable, "-m", "harness", "run", str(f), "--cell", f"{arch}-"]   # ids start <arch>-
            cmd += ["--jobs", str(jobs)] if jobs > 1 else []
            rc = subprocess.run(cmd, cwd=REPO).returncode
            print(f"{f.stem} {arch}: exit {rc}, {time.monotonic() - t0:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("quick", "full"), default="quick")
    ap.add_argument("--only", action="append", help="a profile name (repeatable)")
    ap.add_argument("--recorded", action="store_true", help="do not run: report the recorded wall times")
    ap.add_argument("--jobs", type=int, default=1,
                    help="guests booted at once within a profile (virtual-time cells; default 1)")
    ap.add_argument("--arch", action="append", choices=("x86_64", "arm64"),
                    help="only this arch's cells (repeatable; default: every arch of the files, one after another)")
    ap.add_argument("--tax", type=Path, metavar="FILE.md",
                    help="then write the slowpath tax of the profiles' runs here (python -m harness tax)")
    args = ap.parse_args()
    results = paths.results_dir()
    files = [f for f in profiles(args.scale) if not args.only or f.stem in args.only]
    loaded = {f: load_experiment(f) for f in files}     # each file read once
    arch_list = args.arch or arches(loaded)
    t_suite = time.monotonic()
    if not args.recorded:
        run_all(loaded, arch_list, args.jobs)
    print(f"\nagent suite, {args.scale} scale (wall time of the runs' invocations, from run.json):")
    for arch in arch_list:
        total = 0.0
        for f, le in loaded.items():
            wall, ok, cells = recorded_wall(le, results, arch)
            total += wall or 0.0
            shown = "not run" if wall is None else f"{wall / 60:5.1f} min"
            print(f"  {arch:7s} {f.stem:14s} {shown}   {ok}/{cells} cells ok")
        print(f"  {arch:7s} {'total':14s} {total / 60:5.1f} min (sum of the profiles; target for the quick scale: "
              "30 min an arch)")
    if not args.recorded:
        print(f"  {'suite':14s} {(time.monotonic() - t_suite) / 60:5.1f} min (this invocation, --jobs {args.jobs})")
    if args.tax:
        dirs = [str(d) for le in loaded.values() if (d := results / run_id_for(le)).is_dir()]
        if not dirs:
            print("no run directory to take a tax of", file=sys.stderr)
            return 1
        return subprocess.run([sys.executable, "-m", "harness", "tax", *dirs, "-o", str(args.tax)],
                              cwd=REPO).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
