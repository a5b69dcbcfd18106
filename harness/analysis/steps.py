"""Per-step records of the agent loop and the statistics the summary reports.

Times are CLOCK_MONOTONIC nanoseconds from the guest. For each measured step (warm-up
excluded): wake latency = wake - signal (the world signalled, or the timer deadline passed,
until the agent ran); step latency = done - signal (what an agent loop pays per step beyond
its wait); compute = done - phases (the fixed work, stretched by a low frequency).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("agent", "step", "warmup", "wait_ns", "signal_ns", "wake_ns", "phases_ns", "done_ns", "cpu")


class StepsFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Steps:
    """Column arrays of the measured steps of one cell (all repeats, warm-up removed)."""

    repeat: np.ndarray
    agent: np.ndarray
    step: np.ndarray
    wait_ns: np.ndarray
    wake_ns: np.ndarray       # latency: wake - signal
    step_ns: np.ndarray       # latency: done - signal
    compute_ns: np.ndarray    # done - phases
    phases_ns: np.ndarray     # phases - wake
    cpu: np.ndarray

    def __len__(self) -> int:
        return len(self.step)


def read_steps_csv(path: Path, repeat: int = 0) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise StepsFormatError(f"{path}: unexpected header {header!r}")
        rows = [r for r in reader if r]
    if not rows:
        raise StepsFormatError(f"{path}: no steps")
    try:
        a = np.array(rows, dtype=np.int64)
    except ValueError as e:
        raise StepsFormatError(f"{path}: {e}") from None
    cols = {name: a[:, i] for i, name in enumerate(COLUMNS)}
    keep = cols["warmup"] == 0
    cols = {k: v[keep] for k, v in cols.items()}
    cols["repeat"] = np.full(len(cols["step"]), repeat, dtype=np.int64)
    return cols


def load_steps(paths: list[Path]) -> Steps:
    parts = [read_steps_csv(p, i) for i, p in enumerate(paths)]
    c = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Steps(repeat=c["repeat"], agent=c["agent"], step=c["step"], wait_ns=c["wait_ns"],
                 wake_ns=c["wake_ns"] - c["signal_ns"], step_ns=c["done_ns"] - c["signal_ns"],
                 compute_ns=c["done_ns"] - c["phases_ns"], phases_ns=c["phases_ns"] - c["wake_ns"], cpu=c["cpu"])


@dataclass(frozen=True)
class CellStats:
    steps: int
    wake_p50_us: float
    wake_p99_us: float
    wake_p999_us: float
    step_p50_us: float
    step_p99_us: float
    compute_p50_us: float
    compute_mean_us: float
    step_p50_repeat_cv: float      # run-to-run spread: coefficient of variation of each repeat's step p50

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) / 1000.0


def cell_stats(s: Steps) -> CellStats:
    return CellStats(steps=len(s), wake_p50_us=_pct(s.wake_ns, 50), wake_p99_us=_pct(s.wake_ns, 99),
                     wake_p999_us=_pct(s.wake_ns, 99.9), step_p50_us=_pct(s.step_ns, 50),
                     step_p99_us=_pct(s.step_ns, 99), compute_p50_us=_pct(s.compute_ns, 50),
                     compute_mean_us=float(np.mean(s.compute_ns)) / 1000.0,
                     step_p50_repeat_cv=_repeat_cv(s))


def _repeat_cv(s: Steps) -> float:
    p50 = np.array([np.percentile(s.step_ns[s.repeat == r], 50) for r in np.unique(s.repeat)])
    return float(np.std(p50) / np.mean(p50)) if len(p50) > 1 and np.mean(p50) > 0 else 0.0
