"""Per-step records of the agent loop and the statistics the summary reports.

Times are CLOCK_MONOTONIC nanoseconds from the guest. For each measured step (warm-up
excluded): wake latency = wake - signal (the world signalled, or the timer deadline passed,
until the agent ran); step latency = done - signal (what an agent loop pays per step beyond
its wait); compute = done - phases (the fixed work, stretched by a low frequency).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.guest.share import excerpt
from harness.records import StepStats

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


def parse_steps_csv(text: str, origin: str, repeat: int = 0) -> dict[str, np.ndarray]:
    """agentloop's steps file (what the guest wrote) -> measured-step columns; anything else is a
    StepsFormatError quoting at most a short excerpt of what was there."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        said = excerpt(",".join(header)) if header else "nothing"
        raise StepsFormatError(f"{origin}: unexpected header ({said})")
    rows = [r for r in reader if r]
    if not rows:
        raise StepsFormatError(f"{origin}: no steps")
    try:
        a = np.array(rows, dtype=np.int64)
    except (ValueError, OverflowError):
        raise StepsFormatError(f"{origin}: a row is not {len(COLUMNS)} integers") from None
    if a.ndim != 2 or a.shape[1] != len(COLUMNS):
        raise StepsFormatError(f"{origin}: rows of the wrong width")
    cols = {name: a[:, i] for i, name in enumerate(COLUMNS)}
    keep = cols["warmup"] == 0
    cols = {k: v[keep] for k, v in cols.items()}
    if not len(cols["step"]):
        why = "no measured steps (only warm-up rows)" if len(rows) else "no steps"
        raise StepsFormatError(f"{origin}: {why}")
    cols["repeat"] = np.full(len(cols["step"]), repeat, dtype=np.int64)
    return cols


def steps_from_columns(parts: list[dict[str, np.ndarray]]) -> Steps:
    c = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Steps(repeat=c["repeat"], agent=c["agent"], step=c["step"], wait_ns=c["wait_ns"],
                 wake_ns=c["wake_ns"] - c["signal_ns"], step_ns=c["done_ns"] - c["signal_ns"],
                 compute_ns=c["done_ns"] - c["phases_ns"], phases_ns=c["phases_ns"] - c["wake_ns"], cpu=c["cpu"])


PARSED_HEADER = "repeat,agent,step,wait_us,wake_us,step_us,compute_us,phases_us,cpu"


def to_parsed_csv(s: Steps) -> str:
    """The parsed per-step data of a cell, one row per measured step, in microseconds (steps.csv)."""
    lines = [PARSED_HEADER]
    for row in zip(s.repeat, s.agent, s.step, s.wait_ns, s.wake_ns, s.step_ns, s.compute_ns, s.phases_ns, s.cpu,
                   strict=True):
        r, a, st, w, wk, sp, c, ph, cpu = (int(x) for x in row)
        lines.append(f"{r},{a},{st},{w / 1e3:.3f},{wk / 1e3:.3f},{sp / 1e3:.3f},{c / 1e3:.3f},{ph / 1e3:.3f},{cpu}")
    return "\n".join(lines) + "\n"


def read_parsed_csv(path: Path) -> dict[str, np.ndarray]:
    """steps.csv (written by the host) -> float columns in us; StepsFormatError if it is not one."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as e:
        raise StepsFormatError(f"{path.name}: {e.strerror}") from None
    if not rows or ",".join(rows[0]) != PARSED_HEADER:
        raise StepsFormatError(f"{path.name}: not a parsed steps file")
    try:
        a = np.array(rows[1:], dtype=float).reshape(-1, len(rows[0]))
    except ValueError:
        raise StepsFormatError(f"{path.name}: malformed rows") from None
    if not len(a):
        raise StepsFormatError(f"{path.name}: no steps")
    return {name: a[:, i] for i, name in enumerate(rows[0])}


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) / 1000.0


def cell_stats(s: Steps) -> StepStats:
    return StepStats(steps=len(s), wake_p50_us=_pct(s.wake_ns, 50), wake_p99_us=_pct(s.wake_ns, 99),
                     wake_p999_us=_pct(s.wake_ns, 99.9), step_p50_us=_pct(s.step_ns, 50),
                     step_p99_us=_pct(s.step_ns, 99), compute_p50_us=_pct(s.compute_ns, 50),
                     compute_mean_us=float(np.mean(s.compute_ns)) / 1000.0,
                     step_p50_repeat_cv=_repeat_cv(s))


def _repeat_cv(s: Steps) -> float:
    p50 = np.array([np.percentile(s.step_ns[s.repeat == r], 50) for r in np.unique(s.repeat)])
    return float(np.std(p50) / np.mean(p50)) if len(p50) > 1 and np.mean(p50) > 0 else 0.0
