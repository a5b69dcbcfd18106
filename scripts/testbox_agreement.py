#!/usr/bin/env python3
"""Does the remote path measure what the local one does? For each variant X of a run with cells
`X-local` (a local VM) and `X-box` (the same kernel deployed into the SSH test box), the box's
change against the local cell in step and wake latency (p10, p50, p99) and in energy per step, with
hierarchical bootstrap 95 % CIs over repeats and steps (harness.analysis.compare). "agree": yes
when the interval holds no change (0 %, or a ratio of 1); "equal" when it does not but lies within
+-0.5 % (virtual time makes some figures near-deterministic, so their interval is a point that a
0.1 us difference excludes); no otherwise. Where both cells metered their measured steps (records'
`platform.meter: steps`), a second energy row compares the whole-repeat figures kept beside them.

    python scripts/testbox_agreement.py results/testbox_dvfs_ramp-<hash>
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.analysis.compare import cell_data, energy_ratio, relative_change  # noqa: E402
from harness.analysis.runs import load_run  # noqa: E402

METRICS = (("step", "step_us"), ("wake", "wake_us"))
# p10 too: a second equilibrium of the governor visited more on one path shows in the lower tail
# before it moves the median
QUANTILES = (10, 50, 99)


def pairs(run) -> list[tuple[str, object, object]]:
    by = {c.record.variant: c for c in run.ok}
    out = []
    for name in sorted(by):
        if name.endswith("-local") and (box := by.get(name[:-6] + "-box")) is not None:
            out.append((name[:-6], by[name], box))
    return out


EQUAL = 0.005


def verdict(lo: float, hi: float, none: float) -> str:
    if lo <= none <= hi:
        return "yes"
    return "equal" if -EQUAL <= lo and hi <= EQUAL else "no"


def _pct(e) -> str:
    return f"{e.value * 100:+.1f} % [{e.lo * 100:+.1f}, {e.hi * 100:+.1f}]"


def table(run_dir: Path) -> str:
    run = load_run(run_dir)
    found = pairs(run)
    if not found:
        raise SystemExit(f"{run_dir}: no ok pair of cells X-local / X-box")
    lines = ["| variant | measure | local | box | box vs local (95 % CI) | agree |",
             "|---|---|---|---|---|---|"]
    for name, local, box in found:
        for metric, column in METRICS:
            a, b = cell_data(local, column), cell_data(box, column)
            for q in QUANTILES:
                e = relative_change(a, b, q)
                agree = verdict(e.lo, e.hi, 0.0)
                lines.append(f"| {name} | {metric} p{q} | {_q(a, q)} us | {_q(b, q)} us | {_pct(e)} | {agree} |")
        a, b = cell_data(local), cell_data(box)
        lines.append(_energy_row(name, "energy/step", a, b))
        if all(_meter(c) == "steps" and c.record.platform.repeat_energy_per_step_by_repeat_uj for c in (local, box)):
            a, b = (dataclasses.replace(d, energy_per_step_uj=np.asarray(
                c.record.platform.repeat_energy_per_step_by_repeat_uj, dtype=float)) for d, c in ((a, local), (b, box)))
            lines.append(_energy_row(name, "energy/step, whole repeat", a, b))
    reps = {len(cell_data(c).repeats) for _, lc, bc in found for c in (lc, bc)}
    lines.append("")
    lines.append(f"{len(found)} variant(s), {'/'.join(str(r) for r in sorted(reps))} repeats per cell; intervals "
                 "resample repeats, then steps within each")
    lines += ["", "| cell | step p50 per repeat | steps under 0.9 x the local p50 "
              "| agent's CPU changes per 1000 steps |", "|---|---|---|---|"]
    for _, local, box in found:
        ref = 0.9 * float(np.percentile(cell_data(local).values, 50))
        for c in (local, box):
            fast = float(np.mean(cell_data(c).values < ref)) * 100
            lines.append(f"| {c.record.variant} | {_spread(c)} | {fast:.1f} % | {moves_per_1000(c):.1f} |")
    return "\n".join(lines)


def _meter(c) -> str:
    return c.record.platform.meter if c.record.platform else "none"


def _energy_row(name: str, measure: str, a, b) -> str:
    e = energy_ratio(b, a)
    if math.isnan(e.value):
        return f"| {name} | {measure} | - | - | no meter | - |"
    agree = verdict(e.lo - 1, e.hi - 1, 0.0)
    return (f"| {name} | {measure} | {a.energy_per_step_uj.mean():.0f} uJ | {b.energy_per_step_uj.mean():.0f} uJ | "
            f"x{e.value:.3f} [{e.lo:.3f}, {e.hi:.3f}] | {agree} |")


def moves_per_1000(c) -> float:
    """How often the loop's thread woke on another CPU than its last step's, per 1000 steps (a
    target's background shows here: a busy CPU at the wakeup sends the thread elsewhere)."""
    st = c.steps()
    cpu, rep = np.asarray(st["cpu"]), np.asarray(st["repeat"])
    moves = sum(int(np.count_nonzero(np.diff(cpu[rep == r]))) for r in np.unique(rep))
    return 1000.0 * moves / max(len(cpu), 1)


def _spread(c) -> str:
    p50 = [np.percentile(r, 50) for r in cell_data(c).repeats]
    return f"{min(p50):.0f}-{max(p50):.0f} us" if len(p50) > 1 else f"{p50[0]:.0f} us"


def _q(c, q: float) -> str:
    return f"{np.percentile(c.values, q):.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    print(table(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
