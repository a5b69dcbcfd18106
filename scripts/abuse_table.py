"""The enforcement's checks (issue 14) from a run of experiments/abuse.yaml, as markdown tables.

    python scripts/abuse_table.py RUN_DIR [RUN_DIR...]

Per arch:
- the budget: each marked abuser's charged boosted + guarded time (its cgroup's cpu.agent.stat)
  against rate x t + burst, and the same time from an independent source, the platform over the
  abuser's life: extra CPU-seconds at the top OPP (boost) and in the shallowest idle state (a 1 us
  tolerance guard keeps a CPU there: POLL, or on arm64, which has no polling state, the first
  state) against the unmarked abuser, per second of its life;
- the abuser's throughput (work per second) against the same threads unmarked;
- the sibling agent's gain: step p50 of stock minus alone is the gain alone; next to an abuser,
  the loss is the agent's p50 next to the marked abuser minus its p50 next to the same abuser
  unmarked; kept = 1 - loss / gain, with a 95 % CI that resamples repeats and steps;
- the restrictive policy: the abuser's mark under policy 1 fails with EPERM.

With several run directories (the same experiment run again: each run is a boot of every cell) the
tables of each run come first, then the gain kept with the runs pooled: the repeats of one guest
share its placement (next to a CPU hog the agent's step sits on a level fixed at boot), so the
bootstrap's outer level is the boot, and each boot's median is listed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.compare import CellData, cell_data, ci95, hier_quantiles  # noqa: E402
from harness.analysis.runs import load_run  # noqa: E402

KINDS = ("open-loop", "guards", "storm")
EPERM = 1


def _budget(text: str) -> tuple[float | None, float]:
    rate, burst = text.split()
    return (None if rate == "max" else float(rate)), float(burst)


def _per_s(a, key: str, pick) -> float:
    table = a.freq_time_s if key == "freq" else a.idle_time_s
    return sum(v for k, v in table.items() if pick(k)) / a.elapsed_s if a.elapsed_s > 0 else 0.0


def tables(run_dir: Path) -> list[str]:
    run = load_run(run_dir)
    out = [f"Run `{run_dir.name}`.", ""]
    for arch in run.arches():
        cells = {c.record.variant: c for c in run.select(arch=arch)}
        missing = [v for v in ("stock", "alone", *KINDS, *(f"{k}-unmarked" for k in KINDS), "restrictive")
                   if v not in cells]
        out += [f"### {arch}", ""]
        if missing:
            out += [f"Cells missing or failed: {', '.join(missing)}.", ""]
        out += ["| abuser | charged us (boosted + guarded) | bound rate x t + burst | charged / bound "
                "| throttled | extra top-OPP us | extra shallowest-state us | work/s vs unmarked |",
                "|---|---|---|---|---|---|---|---|"]
        for k in KINDS:
            if k not in cells or f"{k}-unmarked" not in cells:
                continue
            a, u = cells[k].record.abuser, cells[f"{k}-unmarked"].record.abuser
            rate, burst = _budget(a.budget)
            charged = a.stat.get("boosted_usec", 0) + a.stat.get("guarded_usec", 0)
            bound = (rate * a.seconds + burst) if rate is not None else float("inf")
            top = max((int(x) for x in a.freq_time_s), default=0)
            extra_top = (_per_s(a, "freq", lambda x, top=top: int(x) == top)
                         - _per_s(u, "freq", lambda x, top=top: int(x) == top)) * a.elapsed_s * 1e6
            shallow = "POLL" if "POLL" in a.idle_time_s else next(iter(a.idle_time_s), "POLL")
            extra_poll = (_per_s(a, "idle", lambda x, s=shallow: x == s)
                          - _per_s(u, "idle", lambda x, s=shallow: x == s)) * a.elapsed_s * 1e6
            thr = (f"{a.work_per_s / u.work_per_s - 1:+.1%}" if u.work_per_s > 0 and a.work > 0 else "n/a (sleeps)")
            out.append(f"| {k} ({a.threads} threads, {a.seconds:.1f} s, budget {a.budget}) | {charged:.0f} "
                       f"({a.stat.get('boosted_usec', 0)} + {a.stat.get('guarded_usec', 0)}) | {bound:.0f} | "
                       f"{charged / bound:.2f} | {a.stat.get('throttled', 0)} | {extra_top:+.0f} | "
                       f"{extra_poll:+.0f} ({shallow}) | {thr} |")
        out.append("")
        if "stock" in cells and "alone" in cells:
            out += ["| neighbour | agent step p50 us (marked neighbour) | (unmarked neighbour) | gain kept "
                    "[95 % CI] |", "|---|---|---|---|"]
            stock, alone = cell_data(cells["stock"]), cell_data(cells["alone"])
            s50, a50 = (float(np.percentile(c.values, 50)) for c in (stock, alone))
            out.append(f"| none (gain alone: stock {s50:.0f} -> marked {a50:.0f}) | {a50:.0f} | - | - |")
            for k in KINDS:
                if k not in cells or f"{k}-unmarked" not in cells:
                    continue
                m, u = cell_data(cells[k]), cell_data(cells[f"{k}-unmarked"])
                m50, u50 = (float(np.percentile(c.values, 50)) for c in (m, u))
                boot = hier_quantiles((stock, alone, m, u), 50, seed=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    kept = 1 - (boot[:, 2] - boot[:, 3]) / (boot[:, 0] - boot[:, 1])
                lo, hi = ci95(kept)
                value = 1 - (m50 - u50) / (s50 - a50) if s50 != a50 else float("nan")
                out.append(f"| {k} | {m50:.0f} | {u50:.0f} | {value:.1%} [{lo:.1%}, {hi:.1%}] |")
            out.append("")
        out += _residency(cells)
        if "restrictive" in cells:
            a = cells["restrictive"].record.abuser
            verdict = "EPERM, as it must" if a.mark_errno == EPERM else f"errno {a.mark_errno}: NOT EPERM"
            out += [f"Restrictive policy (1): {a.marked} of {a.threads} threads marked; the refusal: {verdict}.", ""]
    return out


def _residency(cells: dict) -> list[str]:
    """With the idle_guard probe (experiments/abuse_guard_residency.yaml): state 0 (POLL on x86_64,
    the shallowest state on arm64) split by the guard tolerance in force when it was chosen, set
    against the abuser's guard charge from the trace and from cpu.agent.stat, and the platform's
    state-0 residency over the abuser's life."""
    rows = []
    for v, c in sorted(cells.items()):
        g = (c.record.probes or {}).get("idle_guard")
        if not g or c.record.abuser is None:
            continue
        a = c.record.abuser
        poll = {int(k): us for k, us in g.get("poll_us_by_tolerance", {}).items()}
        split = "; ".join(f"{'none' if t < 0 else f'{t} us'}: {us:.0f}" for t, us in sorted(poll.items()))
        traced = g.get("charged_us_by_comm", {}).get("abuser", {}).get("guard", 0.0)
        shallow = next(iter(a.idle_time_s), "state 0")
        rows.append(f"| {v} | {split} | {traced:.0f} | {a.stat.get('guarded_usec', 0)} | "
                    f"{a.idle_time_s.get(shallow, 0.0) * 1e6:.0f} ({shallow}) |")
    if not rows:
        return []
    return ["| cell | traced state-0 us by guard tolerance at selection | abuser's guard charge, traced us "
            "| cpu.agent.stat guarded us | platform state-0 us over the abuser's life |",
            "|---|---|---|---|---|", *rows, ""]


def pooled_gain(run_dirs: list[Path]) -> list[str]:
    """The gain kept with each run a boot: a cell's steps of one boot form one outer draw."""
    boots: dict[tuple[str, str], list[np.ndarray]] = {}
    for d in run_dirs:
        for c in load_run(d).ok:
            boots.setdefault((c.record.arch, c.record.variant), []).append(cell_data(c).values)
    out = [f"Pooled over {len(run_dirs)} runs (a run is a boot of each cell; the interval resamples boots, "
           "then steps).", ""]
    for arch in sorted({a for a, _ in boots}):
        pool = {v: CellData(v, np.concatenate(b), tuple(b), np.array([])) for (a, v), b in boots.items() if a == arch}
        if "stock" not in pool or "alone" not in pool:
            out += [f"{arch}: no stock and alone cells: no gain to keep.", ""]
            continue
        s50, a50 = (float(np.percentile(pool[v].values, 50)) for v in ("stock", "alone"))
        out += [f"### {arch}", "", "| neighbour | boots (marked / unmarked) | per-boot p50 us, marked neighbour "
                "| unmarked neighbour | gain kept [95 % CI] |", "|---|---|---|---|---|"]
        out.append(f"| none (gain alone: stock {s50:.0f} -> marked {a50:.0f}; {len(pool['stock'].repeats)} / "
                   f"{len(pool['alone'].repeats)} boots) | - | - | - | - |")
        for k in KINDS:
            if k not in pool or f"{k}-unmarked" not in pool:
                continue
            m, u = pool[k], pool[f"{k}-unmarked"]
            m50, u50 = (float(np.percentile(c.values, 50)) for c in (m, u))
            boot = hier_quantiles((pool["stock"], pool["alone"], m, u), 50, seed=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                kept = 1 - (boot[:, 2] - boot[:, 3]) / (boot[:, 0] - boot[:, 1])
            lo, hi = ci95(kept)
            per = [", ".join(f"{np.percentile(r, 50):.0f}" for r in c.repeats) for c in (m, u)]
            out.append(f"| {k} | {len(m.repeats)} / {len(u.repeats)} | {per[0]} | {per[1]} | "
                       f"{1 - (m50 - u50) / (s50 - a50):.1%} [{lo:.1%}, {hi:.1%}] |")
        out.append("")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    dirs = [Path(a) for a in sys.argv[1:]]
    lines = [line for d in dirs for line in tables(d)]
    print("\n".join(lines + (pooled_gain(dirs) if len(dirs) > 1 else [])))
