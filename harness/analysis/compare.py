"""Compare cells of a run: how much of the stock -> floor latency gap a treatment closes, and at
what energy, with bootstrap confidence intervals.

gap closed at quantile q = (stock_q - treatment_q) / (stock_q - floor_q): 1.0 means the treatment
is as fast as the floor, 0 means no better than stock, negative means worse. Steps are resampled
within each cell (percentile bootstrap); energy is compared per step, resampling repeats.

Cells come from the run's records (`analysis.runs`): they are matched by arch and matrix axes and
told apart by variant, so an experiment with matrix axes compares like with like; failed and
unusable cells are left out and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.analysis.runs import CellData as RunCell
from harness.analysis.runs import RunData, load_run

RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci95_lo": self.lo, "ci95_hi": self.hi}


@dataclass(frozen=True)
class CellData:
    cell: str
    step_us: np.ndarray
    energy_per_step_uj: np.ndarray     # one value per repeat


def cell_data(c: RunCell) -> CellData:
    energy = c.record.platform.energy_per_step_by_repeat_uj if c.record.platform else []
    return CellData(c.id, np.asarray(c.steps()["step_us"], dtype=float), np.asarray(energy, dtype=float))


def _quantile_boot(rng, x: np.ndarray, q: float) -> np.ndarray:
    idx = rng.integers(0, len(x), size=(RESAMPLES, len(x)))
    return np.percentile(x[idx], q, axis=1)


def gap_closed(stock: CellData, treat: CellData, floor: CellData, q: float, seed: int = 1) -> Estimate:
    rng = np.random.default_rng(seed)
    s, t, f = (np.percentile(c.step_us, q) for c in (stock, treat, floor))
    bs, bt, bf = (_quantile_boot(rng, c.step_us, q) for c in (stock, treat, floor))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = (bs - bt) / (bs - bf)
    boot = boot[np.isfinite(boot)]
    value = (s - t) / (s - f) if s != f else float("nan")
    lo, hi = (np.percentile(boot, [2.5, 97.5]) if len(boot) else (float("nan"),) * 2)
    return Estimate(float(value), float(lo), float(hi))


def energy_ratio(treat: CellData, ref: CellData, seed: int = 1) -> Estimate:
    """treatment / reference energy per step; CI by resampling repeats."""
    if not len(treat.energy_per_step_uj) or not len(ref.energy_per_step_uj):
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    a, b = treat.energy_per_step_uj, ref.energy_per_step_uj
    ba = a[rng.integers(0, len(a), size=(RESAMPLES, len(a)))].mean(axis=1)
    bb = b[rng.integers(0, len(b), size=(RESAMPLES, len(b)))].mean(axis=1)
    lo, hi = np.percentile(ba / bb, [2.5, 97.5])
    return Estimate(float(a.mean() / b.mean()), float(lo), float(hi))


@dataclass
class Comparison:
    groups: dict[str, dict] = field(default_factory=dict)     # "arch[ axis=value ...]" -> figures
    left_out: dict[str, str] = field(default_factory=dict)    # cell -> why it is not in any group


def group_label(arch: str, axes: dict) -> str:
    return " ".join([arch] + [f"{k.split('.')[-1]}={v}" for k, v in sorted(axes.items())])


def compare_run(run: RunData, treatment: str, stock: str = "stock", floor: str = "floor") -> Comparison:
    """Per arch and matrix point: gap closed at p50/p99 and energy vs stock and vs floor."""
    res = Comparison()
    for c in run.failed:
        res.left_out[c.id] = f"failed: {c.record.reason}"
    res.left_out.update(run.problems)
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
            "step_p50_us": {c.cell: float(np.percentile(c.step_us, 50)) for c in (s, t, f)},
            "step_p99_us": {c.cell: float(np.percentile(c.step_us, 99)) for c in (s, t, f)},
            "gap_closed_p50": gap_closed(s, t, f, 50).as_dict(),
            "gap_closed_p99": gap_closed(s, t, f, 99).as_dict(),
            "energy_vs_stock": energy_ratio(t, s).as_dict(),
            "energy_vs_floor": energy_ratio(t, f).as_dict(),
        }
    return res


def compare(run_dir: Path, treatment: str, stock: str = "stock", floor: str = "floor") -> Comparison:
    return compare_run(load_run(run_dir), treatment, stock, floor)
