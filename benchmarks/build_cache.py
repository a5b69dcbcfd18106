"""Kernel build timings: the build (cold when the cache has none), then repeated cache hits.

    python benchmarks/build_cache.py                       # x86_64 agent-off of dvfs_ramp.yaml
    python benchmarks/build_cache.py --arch arm64 --config agent-on
    python benchmarks/build_cache.py --cold                # fresh cache + ccache in a temp dir

Prints figures; asserts nothing (targets: a hit in <= 2 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import paths  # noqa: E402
from harness.cli import kernel_requests  # noqa: E402
from harness.kernel.build import KernelBuilder  # noqa: E402
from harness.kernel.cache import BuildCache  # noqa: E402
from harness.spec import load_experiment  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", type=Path, default=paths.EXPERIMENTS_DIR / "dvfs_ramp.yaml")
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("--config", default="agent-off")
    ap.add_argument("--cold", action="store_true", help="build in a fresh temporary cache (no ccache either)")
    ap.add_argument("--hits", type=int, default=5)
    args = ap.parse_args()

    (req,) = kernel_requests(load_experiment(args.experiment), args.arch, args.config)
    tmp = tempfile.TemporaryDirectory(prefix="harness-bench-") if args.cold else None
    cache = BuildCache(Path(tmp.name) if tmp else None)
    builder = KernelBuilder(cache)

    t0 = time.monotonic()
    res = builder.build(req)
    first = time.monotonic() - t0
    kind = "cache hit" if res.cached else ("cold build" if args.cold else "build (warm ccache/objdir possible)")
    print(f"{req.label}: {kind}: {first:.2f} s")
    if res.cached:
        print(f"{req.label}: that build originally took {res.metadata['duration_s']:.0f} s "
              f"({res.metadata['objects']} make steps) on {res.metadata['started'][:10]}")
    hits = []
    for _ in range(args.hits):
        t0 = time.monotonic()
        assert builder.build(req).cached
        hits.append(time.monotonic() - t0)
    print(f"{req.label}: cache hit x{args.hits}: median {statistics.median(hits) * 1000:.0f} ms, "
          f"max {max(hits) * 1000:.0f} ms  (target <= 2000 ms)")
    # A fresh process pays the Python start-up too: the figure a user sees from the CLI.
    t0 = time.monotonic()
    rc = os.system(f"{sys.executable} -m harness build {args.experiment} --arch {args.arch} "
                   f"--config {args.config} {'--cache-dir ' + tmp.name if tmp else ''} > /dev/null")
    print(f"{req.label}: `python -m harness build` on a hit: {time.monotonic() - t0:.2f} s (exit {rc >> 8})")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
