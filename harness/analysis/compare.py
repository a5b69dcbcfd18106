"""Compare cells of a run: how much of the stock -> floor latency gap a treatment closes, and at
what energy, with bootstrap confidence intervals.

gap closed at quantile q = (stock_q - treatment_q) / (stock_q - floor_q): 1.0 means the treatment
is as fast as the floor, 0 means no better than stock, negative means worse. Steps are resampled
within each cell (percentile bootstrap); energy is compared per step, resampling repeats.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.guest import platform

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


def load_cell(cell_dir: Path) -> CellData:
    with open(cell_dir / "steps.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    result = json.loads((cell_dir / "result.json").read_text())
    spec = result["spec"]["workload"]
    per_repeat_steps = spec["agents"] * (spec["steps"] + spec["warmup"])
    energy = []
    for r in range(result.get("repeats", 1)):
        try:
            d = platform.delta(platform.read_snapshot(cell_dir / f"platform-r{r}-before.txt"),
                               platform.read_snapshot(cell_dir / f"platform-r{r}-after.txt"))
        except OSError:
            continue
        energy.append(d.energy_uj / per_repeat_steps)
    return CellData(cell_dir.name, np.array([float(r["step_us"]) for r in rows]), np.array(energy))


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


def compare(run_dir: Path, treatment: str, stock: str = "stock", floor: str = "floor") -> dict[str, dict]:
    """Per cell prefix (e.g. arch): gap closed at p50/p99 and energy vs stock and vs floor."""
    cells = {d.name: d for d in run_dir.iterdir() if (d / "steps.csv").is_file()}
    out = {}
    for name in sorted(cells):
        if not name.endswith(f"-{treatment}"):
            continue
        prefix = name[: -len(treatment)]
        need = {k: cells.get(prefix + v) for k, v in (("stock", stock), ("floor", floor))}
        if None in need.values():
            continue
        t, s, f = load_cell(cells[name]), load_cell(need["stock"]), load_cell(need["floor"])
        out[prefix.rstrip("-")] = {
            "step_p50_us": {c.cell: float(np.percentile(c.step_us, 50)) for c in (s, t, f)},
            "step_p99_us": {c.cell: float(np.percentile(c.step_us, 99)) for c in (s, t, f)},
            "gap_closed_p50": gap_closed(s, t, f, 50).as_dict(),
            "gap_closed_p99": gap_closed(s, t, f, 99).as_dict(),
            "energy_vs_stock": energy_ratio(t, s).as_dict(),
            "energy_vs_floor": energy_ratio(t, f).as_dict(),
        }
    return out
