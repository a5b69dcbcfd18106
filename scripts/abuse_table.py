"""The enforcement's checks (issue 14) from a run of experiments/abuse.yaml, as markdown tables.

    python scripts/abuse_table.py RUN_DIR [RUN_DIR...]

Per arch:
- the budget: each marked abuser's charged boosted + guarded time (its cgroup's cpu.agent.stat)
  against rate x t + burst, and the same time from an independent source, the platform over the
  abuser's life: busy time moved to the top OPP (boost: the rise of the top OPP's share of the
  meter's busy_time_in_state, time a task ran at each frequency, times the busy time; cpufreq's
  time_in_state also counts idle time at the OPP a CPU was left at) and extra time in the
  shallowest idle state (a 1 us tolerance guard keeps a CPU there:
  POLL, or on arm64, which has no polling state, the first state), against the unmarked abuser
  per second of its life; their sum over the bound is the independent check (a CPU-bound task
  runs at the top OPP unmarked too, so its boost buys little there);
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
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.compare import CellData, cell_data, ci95, hier_quantiles  # noqa: E402
from harness.analysis.runs import load_run  # noqa: E402

KINDS = ("open-loop", "guards", "storm")
EPERM = 1


def _budget(text: str) -> tuple[float | None, float]:
    rate, burst = text.split()
    return (None if rate == "max" else float(rate)), float(burst)


def neighbours(variants) -> list[str]:
    """The abusers: each variant that has an `-unmarked` twin (the same threads as a stock task),
    in the experiment's order (abuse.yaml's kinds; abuse_pinned.yaml's placements)."""
    names = list(variants)
    found = [v for v in names if f"{v}-unmarked" in names]
    return sorted(found, key=lambda v: KINDS.index(v) if v in KINDS else len(KINDS))


def gain_kept(stock: CellData, alone: CellData, marked: CellData, unmarked: CellData) -> tuple[float, float, float]:
    """The share of the gain alone (stock p50 - alone p50) the agent keeps next to the marked
    abuser, against the same abuser unmarked: 1 - (marked p50 - unmarked p50) / gain, with the 95 %
    interval of the hierarchical bootstrap (repeats or boots, then steps)."""
    s50, a50, m50, u50 = (float(np.percentile(c.values, 50)) for c in (stock, alone, marked, unmarked))
    boot = hier_quantiles((stock, alone, marked, unmarked), 50, seed=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = 1 - (boot[:, 2] - boot[:, 3]) / (boot[:, 0] - boot[:, 1])
    lo, hi = ci95(kept)
    return (1 - (m50 - u50) / (s50 - a50) if s50 != a50 else float("nan")), lo, hi


def moved_to_top(marked: dict[str, float], unmarked: dict[str, float]) -> float | None:
    """Busy us the mark moved to the top OPP: the marked run's busy time times the rise of the
    top OPP's share of it over the unmarked run's. Busy time, not cpufreq's time_in_state (which
    counts idle time at the OPP a CPU was left at); a share, not a difference of totals, since the
    whole guest's busy time differs from boot to boot by more than a 1 % budget. None without the
    meter's busy_time_in_state (older kernels)."""
    if not marked or not unmarked:
        return None
    top = str(max(int(k) for k in (*marked, *unmarked)))   # the top OPP either run reached
    total_m, total_u = sum(marked.values()), sum(unmarked.values())
    if total_m <= 0 or total_u <= 0:
        return None
    return (marked.get(top, 0.0) / total_m - unmarked.get(top, 0.0) / total_u) * total_m * 1e6


def _per_s(a, key: str, pick) -> float:
    table = {"freq": a.freq_time_s, "busy": a.busy_freq_time_s, "idle": a.idle_time_s}[key]
    return sum(v for k, v in table.items() if pick(k)) / a.elapsed_s if a.elapsed_s > 0 else 0.0


def tables(run_dir: Path) -> list[str]:
    run = load_run(run_dir)
    out = [f"Run `{run_dir.name}`.", ""]
    for arch in run.arches():
        cells = {c.record.variant: c for c in run.select(arch=arch)}
        # the pairs the experiment has, ok or not: a failed abuser is listed, not dropped
        planned = {c.record.variant for c in run.ok + run.failed if c.record.arch == arch}
        planned |= {e.variant for e in (run.index.cells.values() if run.index else ()) if e.arch == arch}
        pairs = neighbours(sorted(planned)) or list(KINDS)
        expected = ["stock", "alone", *pairs, *(f"{k}-unmarked" for k in pairs)]
        expected += ["restrictive"] if set(pairs) <= set(KINDS) else []
        # with an index, what this experiment planned and did not get (abuse_boost.yaml has no stock)
        missing = [v for v in expected if v not in cells and (run.index is None or v in planned)]
        out += [f"### {arch}", ""]
        if missing:
            out += [f"Cells missing or failed: {', '.join(missing)}.", ""]
        out += ["| abuser | charged us (boosted + guarded) | bound rate x t + burst | charged / bound "
                "| throttled | busy us moved to the top OPP | extra shallowest-state us | independent / bound "
                "| work/s vs unmarked |", "|---|---|---|---|---|---|---|---|---|"]
        for k in neighbours(cells):
            a, u = cells[k].record.abuser, cells[f"{k}-unmarked"].record.abuser
            rate, burst = _budget(a.budget)
            charged = a.stat.get("boosted_usec", 0) + a.stat.get("guarded_usec", 0)
            bound = (rate * a.seconds + burst) if rate is not None else float("inf")
            if bound <= 0:   # a "0 0" budget: nothing may be charged, so no ratio either
                out.append(f"| {k} (budget {a.budget}) | {charged:.0f} | 0 | - | {a.stat.get('throttled', 0)} "
                           "| - | - | - | - |")
                continue
            # pinned (abuse_boost.yaml): the abuser's CPU alone, without the agent's own windows
            own_cpu = bool(a.cpu_busy_freq_time_s and u.cpu_busy_freq_time_s)
            extra_top = (moved_to_top(a.cpu_busy_freq_time_s, u.cpu_busy_freq_time_s) if own_cpu
                         else moved_to_top(a.busy_freq_time_s, u.busy_freq_time_s))
            shallow = "POLL" if "POLL" in a.idle_time_s else next(iter(a.idle_time_s), "POLL")
            extra_poll = (_per_s(a, "idle", lambda x, s=shallow: x == s)
                          - _per_s(u, "idle", lambda x, s=shallow: x == s)) * a.elapsed_s * 1e6
            # what the mark bought, from the platform: a boost can only add busy time at the top
            # OPP (a CPU-bound task has it unmarked too), a guard only shallow-state time
            indep = (max(extra_top or 0, 0) + max(extra_poll, 0)) / bound
            thr = (f"{a.work_per_s / u.work_per_s - 1:+.1%}" if u.work_per_s > 0 and a.work > 0 else "n/a (sleeps)")
            pin = f", on CPU {a.cpu}" if a.cpu is not None else ""
            kind = f"{a.kind}, " if a.kind != k else ""
            out.append(f"| {k} ({kind}{a.threads} threads{pin}, {a.seconds:.1f} s, budget {a.budget}) | {charged:.0f} "
                       f"({a.stat.get('boosted_usec', 0)} + {a.stat.get('guarded_usec', 0)}) | {bound:.0f} | "
                       f"{charged / bound:.2f} | {a.stat.get('throttled', 0)} | "
                       f"{'n/a' if extra_top is None else f'{extra_top:+.0f}'}{f' (CPU {a.cpu})' if own_cpu else ''} | "
                       f"{extra_poll:+.0f} ({shallow}) | "
                       f"{indep:.2f}{' (idle only)' if extra_top is None else ''} | {thr} |")
        out.append("")
        if "stock" in cells and "alone" in cells:
            out += ["| neighbour | agent step p50 us (marked neighbour) | (unmarked neighbour) | gain kept "
                    "[95 % CI] |", "|---|---|---|---|"]
            stock, alone = cell_data(cells["stock"]), cell_data(cells["alone"])
            s50, a50 = (float(np.percentile(c.values, 50)) for c in (stock, alone))
            out.append(f"| none (gain alone: stock {s50:.0f} -> marked {a50:.0f}) | {a50:.0f} | - | - |")
            for k in neighbours(cells):
                m, u = cell_data(cells[k]), cell_data(cells[f"{k}-unmarked"])
                m50, u50 = (float(np.percentile(c.values, 50)) for c in (m, u))
                value, lo, hi = gain_kept(stock, alone, m, u)
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


def pooled_throughput(run_dirs: list[Path]) -> list[str]:
    """The abuser's work per second against the same threads unmarked, one ratio per run that has
    both cells (each cell a boot of its own), with the mean's 95 % bootstrap interval over runs:
    boots differ by a few per cent, more than the +-2 % asked, so one pair cannot tell. The interval
    is Student's t over the pairs: honest for a handful of them, where a bootstrap of n = 2 to 4 is
    only their range."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for d in run_dirs:
        run = load_run(d)
        for arch in run.arches():
            cells = {c.record.variant: c.record.abuser for c in run.select(arch=arch)}
            for k in neighbours(cells):
                a, u = cells[k], cells[f"{k}-unmarked"]
                if a is not None and u is not None and a.work > 0 and u.work_per_s > 0:
                    ratios.setdefault((arch, k if a.cpu is None else f"{k} (CPU {a.cpu})"), []).append(
                        a.work_per_s / u.work_per_s - 1)
    if not ratios:
        return []
    out = ["Throughput pooled over the runs (work/s marked against unmarked, one pair of boots per run; "
           "the interval is Student's t over the pairs):", "",
           "| arch | abuser | pairs | per-pair | mean [95 % CI] |", "|---|---|---|---|---|"]
    for (arch, k), r in sorted(ratios.items()):
        v = np.array(r)
        lo, hi = t_interval(v)
        ci = f"[{lo:+.1%}, {hi:+.1%}]" if len(v) > 1 else "(one pair: no interval)"
        out.append(f"| {arch} | {k} | {len(v)} | {', '.join(f'{x:+.1%}' for x in v)} | {v.mean():+.1%} {ci} |")
    return out + [""]


def t_interval(v: np.ndarray) -> tuple[float, float]:
    """The mean's 95 % interval, Student's t with n - 1 degrees of freedom (nan for one value)."""
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


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
        for k in neighbours(pool):
            m, u = pool[k], pool[f"{k}-unmarked"]
            value, lo, hi = gain_kept(pool["stock"], pool["alone"], m, u)
            per = [", ".join(f"{np.percentile(r, 50):.0f}" for r in c.repeats) for c in (m, u)]
            out.append(f"| {k} | {len(m.repeats)} / {len(u.repeats)} | {per[0]} | {per[1]} | "
                       f"{value:.1%} [{lo:.1%}, {hi:.1%}] |")
        out.append("")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    dirs = [Path(a) for a in sys.argv[1:]]
    lines = [line for d in dirs for line in tables(d)]
    print("\n".join(lines + (pooled_gain(dirs) + pooled_throughput(dirs) if len(dirs) > 1 else [])))
