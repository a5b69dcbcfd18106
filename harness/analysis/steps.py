"""Per-step records of the agent loop and the statistics the summary reports.

Times are CLOCK_MONOTONIC nanoseconds from the guest. For each measured step (warm-up
excluded): wake latency = wake - signal (the world signalled, or the timer deadline passed,
until the agent ran); step latency = done - signal (what an agent loop pays per step beyond
its wait); compute = done - phases (the fixed work, stretched by a low frequency).

With the agent-workload options (workload.compute, wait.period_us, fanout) the loop's file has two
more columns, the step's compute in units and whether it missed its deadline; they feed the
deadline-miss counts and the decomposition, and the parsed steps.csv stays as it always was.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import records
from harness.guest.share import excerpt
from harness.records import StepStats

COLUMNS = ("agent", "step", "warmup", "wait_ns", "signal_ns", "wake_ns", "phases_ns", "done_ns", "cpu")
EXTENDED_COLUMNS = COLUMNS + ("units", "missed")
TIME_MAX_NS = 1 << 62   # CLOCK_MONOTONIC in ns: 146 years of uptime


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
    units: np.ndarray | None = None    # per-step compute (units), extended files only
    missed: np.ndarray | None = None   # 1: ended after its deadline (periodic loops), extended files only
    # the agent's time between its previous step's done and this step's signal (>= 0; NaN for the
    # first measured step of a repeat and agent): from the loop's absolute stamps, which the parsed
    # steps.csv of a results directory does not keep
    idle_before_ns: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.step)


def parse_steps_csv(text: str, origin: str, repeat: int = 0, warmup: bool = False) -> dict[str, np.ndarray]:
    """agentloop's steps file (what the guest wrote) -> measured-step columns (with `warmup`, the
    warm-up rows too, flagged in the "warmup" column); anything else is a StepsFormatError quoting
    at most a short excerpt of what was there."""
    header = text.partition("\n")[0].rstrip("\r")
    names = tuple(header.split(","))
    if names not in (COLUMNS, EXTENDED_COLUMNS):
        raise StepsFormatError(f"{origin}: unexpected header ({excerpt(header) if header else 'nothing'})")
    body = text.partition("\n")[2]
    if not body.strip():
        raise StepsFormatError(f"{origin}: no steps")
    try:   # numpy's C reader: memory in proportion to the numbers, not to Python objects per field
        a = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OverflowError):
        raise StepsFormatError(f"{origin}: a row is not {len(names)} integers") from None
    if a.shape[1] != len(names):
        raise StepsFormatError(f"{origin}: rows of the wrong width")
    if (a < 0).any() or (a > TIME_MAX_NS).any():   # keeps every difference below inside int64
        raise StepsFormatError(f"{origin}: a value outside 0..{TIME_MAX_NS}")
    rows = a
    cols = {name: a[:, i] for i, name in enumerate(names)}
    keep = cols["warmup"] == 0
    if not warmup:
        cols = {k: v[keep] for k, v in cols.items()}
    if not keep.any():
        why = "no measured steps (only warm-up rows)" if len(rows) else "no steps"
        raise StepsFormatError(f"{origin}: {why}")
    cols["repeat"] = np.full(len(cols["step"]), repeat, dtype=np.int64)
    return cols


def idle_before(repeat: np.ndarray, agent: np.ndarray, step: np.ndarray, signal_ns: np.ndarray,
                done_ns: np.ndarray) -> np.ndarray:
    """Per step: its signal minus the done of the same repeat's and agent's previous step, clipped
    at 0 (a step signalled before the last one ended waited not at all); NaN where no previous step."""
    order = np.lexsort((step, agent, repeat))
    out = np.full(len(step), np.nan)
    r, a = repeat[order], agent[order]
    same = (r[1:] == r[:-1]) & (a[1:] == a[:-1])
    gaps = np.maximum(signal_ns[order][1:] - done_ns[order][:-1], 0).astype(float)
    out[order[1:][same]] = gaps[same]
    return out


def steps_from_columns(parts: list[dict[str, np.ndarray]]) -> Steps:
    keys = set.intersection(*(set(p) for p in parts))
    c = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k in keys}
    return Steps(repeat=c["repeat"], agent=c["agent"], step=c["step"], wait_ns=c["wait_ns"],
                 wake_ns=c["wake_ns"] - c["signal_ns"], step_ns=c["done_ns"] - c["signal_ns"],
                 compute_ns=c["done_ns"] - c["phases_ns"], phases_ns=c["phases_ns"] - c["wake_ns"], cpu=c["cpu"],
                 units=c.get("units"), missed=c.get("missed"),
                 idle_before_ns=idle_before(c["repeat"], c["agent"], c["step"], c["signal_ns"], c["done_ns"]))


PARSED_HEADER = "repeat,agent,step,wait_us,wake_us,step_us,compute_us,phases_us,cpu"
PARSED_INT_COLUMNS = ("repeat", "agent", "step", "cpu")   # the rest are microseconds (3 decimals)


def to_parsed_csv(s: Steps) -> str:
    """The parsed per-step data of a cell, one row per measured step, in microseconds (steps.csv)."""
    lines = [PARSED_HEADER]
    for row in zip(s.repeat, s.agent, s.step, s.wait_ns, s.wake_ns, s.step_ns, s.compute_ns, s.phases_ns, s.cpu,
                   strict=True):
        r, a, st, w, wk, sp, c, ph, cpu = (int(x) for x in row)
        lines.append(f"{r},{a},{st},{w / 1e3:.3f},{wk / 1e3:.3f},{sp / 1e3:.3f},{c / 1e3:.3f},{ph / 1e3:.3f},{cpu}")
    return "\n".join(lines) + "\n"


def read_parsed_csv(path: Path) -> dict[str, np.ndarray]:
    """steps.csv of a run directory -> float columns in us; StepsFormatError if it is not one."""
    try:
        text = records.read_bounded(path, records.STEPS_LIMIT).decode("ascii")
    except (records.RecordError, UnicodeDecodeError) as e:
        raise StepsFormatError(f"{path.name}: {e}") from None
    head, _, body = text.partition("\n")
    if head != PARSED_HEADER:
        raise StepsFormatError(f"{path.name}: not a parsed steps file")
    names = head.split(",")
    try:
        a = np.loadtxt(io.StringIO(body), delimiter=",", dtype=float, ndmin=2)
    except ValueError:
        raise StepsFormatError(f"{path.name}: malformed rows") from None
    if not a.size:
        raise StepsFormatError(f"{path.name}: no steps")
    if a.shape[1] != len(names) or not np.isfinite(a).all():
        raise StepsFormatError(f"{path.name}: malformed rows")
    return {name: a[:, i] for i, name in enumerate(names)}


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) / 1000.0


def cell_stats(s: Steps, deadlines: bool = False, fanout: bool = False) -> StepStats:
    """deadlines: the loop was periodic (count its misses); fanout: one signal per step for every
    agent, so the step's fan-in latency is the slowest agent's."""
    extra = {}
    if deadlines:
        if s.missed is None:
            raise StepsFormatError("a periodic loop's steps file has no missed column")
        extra.update(deadline_misses=int(s.missed.sum()), deadline_miss_fraction=float(s.missed.mean()))
    if fanout:
        fanin = fanin_ns(s)
        extra.update(fanin_p50_us=_pct(fanin, 50), fanin_p99_us=_pct(fanin, 99))
    return StepStats(steps=len(s), wake_p50_us=_pct(s.wake_ns, 50), wake_p99_us=_pct(s.wake_ns, 99),
                     wake_p999_us=_pct(s.wake_ns, 99.9), step_p50_us=_pct(s.step_ns, 50),
                     step_p99_us=_pct(s.step_ns, 99), compute_p50_us=_pct(s.compute_ns, 50),
                     compute_mean_us=float(np.mean(s.compute_ns)) / 1000.0,
                     step_p50_repeat_cv=_repeat_cv(s), **extra)


def slowest_per_step(repeat: np.ndarray, step: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per (repeat, step), in that order: the largest of `values` over the agents of that step."""
    key = repeat.astype(np.int64) * (int(step.max()) + 1) + step.astype(np.int64)
    order = np.argsort(key, kind="stable")
    k, v = key[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return np.maximum.reduceat(v, starts)


def fanin_ns(s: Steps) -> np.ndarray:
    """Per (repeat, step): the slowest agent's signal -> done, i.e. when the fan-in completes
    (every agent of a fan-out step shares one signal stamp)."""
    return slowest_per_step(s.repeat, s.step, s.step_ns)


def _repeat_cv(s: Steps) -> float:
    p50 = np.array([np.percentile(s.step_ns[s.repeat == r], 50) for r in np.unique(s.repeat)])
    return float(np.std(p50) / np.mean(p50)) if len(p50) > 1 and np.mean(p50) > 0 else 0.0


def units_per_step(w, step: np.ndarray, units: np.ndarray | None) -> np.ndarray:
    """Each step's compute in units: the loop's own column where it wrote one, else the workload's
    fixed work with its bursts (agentloop's rule: step k, warm-up counted, is a burst when
    k % burst_every == burst_every - 1). `w` is the cell's WorkloadSpec."""
    if units is not None:
        return np.asarray(units, dtype=float)
    if w.burst_every:
        return np.where(step % w.burst_every == w.burst_every - 1, w.burst_units, w.compute_units).astype(float)
    return np.full(len(step), float(w.compute_units))
