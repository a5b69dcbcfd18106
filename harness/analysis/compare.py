"""Compare cells: within a run, how much of the stock -> floor latency gap a treatment closes and
at what energy; across runs, how each cell moved against a baseline run.

gap closed at quantile q = (stock_q - treatment_q) / (stock_q - floor_q): 1.0 means the treatment
is as fast as the floor, 0 means no better than stock, negative means worse.

Confidence intervals come from a hierarchical bootstrap (`scipy.stats.bootstrap` over the repeats,
then the steps resampled within each drawn repeat): schedutil settles on a different OPP from one
boot to the next, so the steps of a repeat are not independent of each other and resampling pooled
steps alone gives intervals that are too narrow. With a single repeat only the step level is left,
and the estimate says so (`level: steps`). Significance: a two-sided Mann-Whitney U test on the
repeats' own quantiles (the repeat is the independent unit; with 3 repeats a side the smallest
possible p is 0.1, with 5 it is 0.008). Energy is per step, resampling repeats.

Cells come from the records (`analysis.runs`): matched by arch and matrix axes, told apart by
variant (and, across runs, by run); failed and unusable cells are left out and named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from harness.analysis.runs import CellData as RunCell
from harness.analysis.runs import RunData, load_run

RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float
    level: str = "repeats+steps"    # what the interval resamples
    p_value: float | None = None    # against the reference, where there is one

    def as_dict(self) -> dict:
        d = {"value": self.value, "ci95_lo": self.lo, "ci95_hi": self.hi, "level": self.level}
        if self.p_value is not None:
            d["p_value"] = self.p_value
        return d


@dataclass(frozen=True)
class CellData:
    cell: str
    values: np.ndarray                  # one latency column (us) of all measured steps
    repeats: tuple[np.ndarray, ...]     # the same steps, one array per repeat
    energy_per_step_uj: np.ndarray      # one value per repeat


def cell_data(c: RunCell, column: str = "step_us") -> CellData:
    """A cell's `column` of steps.csv (step latency unless asked otherwise), pooled and per repeat."""
    st = c.steps()
    vals, rep = np.asarray(st[column], dtype=float), np.asarray(st["repeat"])
    energy = c.record.platform.energy_per_step_by_repeat_uj if c.record.platform else []
    return CellData(c.id, vals, tuple(vals[rep == r] for r in np.unique(rep)), np.asarray(energy, dtype=float))


def interval_level(*cells: CellData) -> str:
    if all(len(c.repeats) > 1 for c in cells):
        return "repeats+steps"
    return "steps (1 repeat: run-to-run spread not covered)"


def hier_bootstrap(cells: tuple[CellData, ...], statistic: Callable[[int, np.ndarray], Any], seed: int) -> np.ndarray:
    """(RESAMPLES, len(cells), ...): statistic(i, drawn steps of cells[i]) in each resample, the
    repeats drawn by scipy's bootstrap, the steps within each drawn repeat resampled here (one draw
    serves everything the statistic returns). With one repeat a cell's outer draw is that repeat
    every time."""
    rng = np.random.default_rng(seed)
    out: list[list[Any]] = []

    def resample(*idx):
        row = []
        for i, (c, picks) in enumerate(zip(cells, idx, strict=True)):
            parts = [c.repeats[int(j)] for j in np.atleast_1d(picks)]
            drawn = np.concatenate([p[rng.integers(0, len(p), len(p))] for p in parts])
            row.append(statistic(i, drawn))
        out.append(row)
        return 0.0

    data = tuple(np.arange(len(c.repeats)) for c in cells)
    if all(len(d) > 1 for d in data):
        stats.bootstrap(data, resample, n_resamples=RESAMPLES, vectorized=False, paired=False,
                        method="percentile", random_state=np.random.default_rng(seed + 1))
    else:   # scipy needs two observations per sample: draw the repeats here (a lone one stays)
        outer = np.random.default_rng(seed + 1)
        for _ in range(RESAMPLES):
            resample(*[d[outer.integers(0, len(d), len(d))] for d in data])
    return np.asarray(out[-RESAMPLES:])


def hier_quantiles(cells: tuple[CellData, ...], q: float | Sequence[float], seed: int) -> np.ndarray:
    """(RESAMPLES, len(cells)) quantiles, (RESAMPLES, len(cells), len(q)) for several, from
    `hier_bootstrap` (one draw serves every q)."""
    return hier_bootstrap(cells, lambda _, drawn: np.percentile(drawn, q), seed)


def ci95(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return float("nan"), float("nan")
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def repeat_quantiles(c: CellData, q: float) -> np.ndarray:
    return np.array([np.percentile(r, q) for r in c.repeats])


def mann_whitney_p(a: CellData, b: CellData, q: float) -> float | None:
    """Two-sided p that the repeats' q-quantiles of a and b come from one distribution."""
    x, y = repeat_quantiles(a, q), repeat_quantiles(b, q)
    if len(x) < 2 or len(y) < 2:
        return None
    return float(stats.mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue)


def gap_closed(stock: CellData, treat: CellData, floor: CellData, q: float, seed: int = 1) -> Estimate:
    s, t, f = (np.percentile(c.values, q) for c in (stock, treat, floor))
    boot = hier_quantiles((stock, treat, floor), q, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = (boot[:, 0] - boot[:, 1]) / (boot[:, 0] - boot[:, 2])
    value = (s - t) / (s - f) if s != f else float("nan")
    return Estimate(float(value), *ci95(gaps), interval_level(stock, treat, floor), mann_whitney_p(treat, stock, q))


def relative_change(base: CellData, other: CellData, q: float, seed: int = 1) -> Estimate:
    """other_q / base_q - 1, with its hierarchical CI and the repeat-level p-value."""
    b, o = np.percentile(base.values, q), np.percentile(other.values, q)
    boot = hier_quantiles((base, other), q, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = boot[:, 1] / boot[:, 0] - 1
    return Estimate(float(o / b - 1) if b else float("nan"), *ci95(rel), interval_level(base, other),
                    mann_whitney_p(other, base, q))


def energy_ratio(treat: CellData, ref: CellData, seed: int = 1) -> Estimate:
    """treatment / reference energy per step; CI by resampling repeats."""
    a, b = treat.energy_per_step_uj, ref.energy_per_step_uj
    if not len(a) or not len(b):
        return Estimate(float("nan"), float("nan"), float("nan"), "none (no energy meter)")
    rng = np.random.default_rng(seed)
    ba = a[rng.integers(0, len(a), size=(RESAMPLES, len(a)))].mean(axis=1)
    bb = b[rng.integers(0, len(b), size=(RESAMPLES, len(b)))].mean(axis=1)
    p = (float(stats.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
         if len(a) > 1 and len(b) > 1 else None)
    return Estimate(float(a.mean() / b.mean()), *ci95(ba / bb), "repeats" if min(len(a), len(b)) > 1 else
                    "none (1 repeat)", p)


@dataclass
class Comparison:
    groups: dict[str, dict] = field(default_factory=dict)     # "arch[ axis=value ...]" -> figures
    left_out: dict[str, str] = field(default_factory=dict)    # cell -> why it is not in any group
    runs: list[str] = field(default_factory=list)             # the runs' names, baseline first


# compare_runs's metrics: name -> the steps column
METRICS = {"step": "step_us", "wake": "wake_us"}


def group_label(arch: str, axes: dict) -> str:
    return " ".join([arch] + [f"{k.split('.')[-1]}={v}" for k, v in sorted(axes.items())])


def left_out(run: RunData, prefix: str = "") -> dict[str, str]:
    out = {f"{prefix}{c.id}": f"failed: {c.record.reason}" for c in run.failed}
    out.update({f"{prefix}{k}": v for k, v in run.problems.items()})
    return out


def compare_run(run: RunData, treatment: str, stock: str = "stock", floor: str = "floor") -> Comparison:
    """Per arch and matrix point: gap closed at p50/p99 and energy vs stock and vs floor."""
    res = Comparison(left_out=left_out(run))
    groups: dict[tuple, dict[str, RunCell]] = {}
    for c in run.ok:
        groups.setdefault((c.record.arch, c.axes_key()), {})[c.record.variant] = c
    for (_, _), by_variant in sorted(groups.items()):
        any_cell = next(iter(by_variant.values()))
        label = group_label(any_cell.record.arch, any_cell.record.axes)
        need = {"treatment": treatment, "stock": stock, "floor": floor}
        absent = [v for v in need.values() if v not in by_variant]
        if absent:
            for c in by_variant.values():
                if c.record.variant in need.values():
                    res.left_out.setdefault(c.id, f"no ok {', '.join(absent)} cell beside it ({label})")
            continue
        t, s, f = (cell_data(by_variant[need[k]]) for k in ("treatment", "stock", "floor"))
        res.groups[label] = {
            "cells": {"treatment": t.cell, "stock": s.cell, "floor": f.cell},
            "repeats": {c.cell: len(c.repeats) for c in (s, t, f)},
            "step_p50_us": {c.cell: float(np.percentile(c.values, 50)) for c in (s, t, f)},
            "step_p99_us": {c.cell: float(np.percentile(c.values, 99)) for c in (s, t, f)},
            "gap_closed_p50": gap_closed(s, t, f, 50).as_dict(),
            "gap_closed_p99": gap_closed(s, t, f, 99).as_dict(),
            "energy_vs_stock": energy_ratio(t, s).as_dict(),
            "energy_vs_floor": energy_ratio(t, f).as_dict(),
        }
    return res


def compare(run_dir: Path, treatment: str, stock: str = "stock", floor: str = "floor") -> Comparison:
    return compare_run(load_run(run_dir), treatment, stock, floor)


def compare_runs(runs: list[RunData], metric: str = "step") -> Comparison:
    """mmtests compare-kernels style: the first run is the baseline; every cell (arch, variant and
    axes) found in it and in another run gets that run's p50/p99 change of the metric (step or wake
    latency) with CI and p. Runs are named by their directory, by their path where names repeat."""
    column = METRICS[metric]
    res = Comparison()
    names = [r.dir.name for r in runs]
    if len(set(names)) != len(names):
        names = [str(r.dir) for r in runs]
    res.runs = names
    for name, run in zip(names, runs, strict=True):
        res.left_out.update(left_out(run, f"{name}/"))
    keyed = [{(c.record.arch, c.record.variant, c.axes_key()): c for c in run.ok} for run in runs]
    for key, base_cell in sorted(keyed[0].items()):
        base = cell_data(base_cell, column)
        label = group_label(key[0], base_cell.record.axes) + f" {key[1]}"
        row: dict = {"metric": metric,
                     "baseline": {"run": names[0], "cell": base.cell, "repeats": len(base.repeats),
                                  f"{metric}_p50_us": float(np.percentile(base.values, 50)),
                                  f"{metric}_p99_us": float(np.percentile(base.values, 99))}, "runs": {}}
        for name, other_cells in zip(names[1:], keyed[1:], strict=True):
            if key not in other_cells:
                res.left_out.setdefault(f"{name}/{base.cell}", f"no ok cell matching {names[0]}/{base.cell}")
                continue
            other = cell_data(other_cells[key], column)
            row["runs"][name] = {"cell": other.cell, "repeats": len(other.repeats),
                                 f"{metric}_p50_us": float(np.percentile(other.values, 50)),
                                 f"{metric}_p99_us": float(np.percentile(other.values, 99)),
                                 "p50_change": relative_change(base, other, 50).as_dict(),
                                 "p99_change": relative_change(base, other, 99).as_dict()}
        if row["runs"]:
            res.groups[label] = row
    return res
