"""The slowpath tax per 10,000 steps (issue 15's headline): what a variant's steps cost beyond the
floor's, in seconds per 10,000 steps, from a run's stored records.

tax = (step latency of the cell - step latency of the floor cell of the same arch and matrix point
in the same run) x 10,000, for the mean step and the p50 step. The floor is the cell whose variant
is named `floor` (experiments/agents/*.yaml: performance + the shallowest C-state only; older runs
recorded another setting, which the output quotes from the floor's record). A group without an ok
floor cell gets no tax, and the output says so.

Intervals: compare's hierarchical bootstrap (`hier_bootstrap`: repeats drawn, then the steps within
each drawn repeat) over all the cells of a group at once; in each resample the floor's figure is
subtracted from each cell's, so both cells are resampled and the floor's own tax is 0 in every
resample. With one repeat only the steps are resampled, and the estimate's level says so.

Split: where the cell and the floor both have a per-step decomposition (cells probed with dvfs_ramp
+ wake_path; `analysis.decompose`), each part's mean per step minus the floor's, x 10,000: point
values of the traced runs (one traced run a cell: no interval). The parts plus the residual add up to
the traced steps' mean tax exactly; against the mean-step tax of the measured (untraced) repeats the
sum is checked with the decomposition's tolerance carried to a difference of two cells:
|sum of the parts - mean-step tax| <= tolerance x (cell's mean step + floor's mean step) x 10,000.

Paired: every variant of a run runs the same seeds, so step k of repeat r draws the same wait and
the same compute in every cell (a tool call's lognormal burst is the same burst). Where a cell and
its floor ran the same workload seed, the paired mean-step tax is the mean of the per-step
differences (cell - floor, matched on repeat, agent and step), with an interval from the same
hierarchical bootstrap over those differences: it removes the spread that the draws share, which
for bursty profiles is most of it. Steps present in one cell only are left out, and counted.

Energy (a latency gain is only worth its energy): each cell's energy per step from its record (the
platform's meter over the measured steps, or over whole repeats in older records, which the notes
name), its mean over repeats with a 95 % interval from resampling the repeats (under 5 repeats,
which such a bootstrap only brackets by their range, the range, labelled so), and its ratio to the
group's stock cell (`compare.energy_ratio`; the same rule), and where the cell has one, its place against the
physical frontier (eta = the least energy that meets its latency on its platform / what it spent,
on the agent's CPU; the record's `platform.frontier`, bounded step by step where the work varies).
Measured repeats only: a traced run has no say.

Fan-in (fan-out / fan-in loops, workload.fanout): what the orchestrator waits for is the slowest
agent of each step, not one agent's step. Such groups also get the fan-in tax: per (repeat, step)
the largest signal -> done over the agents (they share one signal stamp), its mean minus the
floor's x 10,000, with an interval from the same bootstrap.

Deadline misses (periodic loops, workload.wait.period_us): a step misses when it ends after the next
release, done > signal + period (agentloop's rule), i.e. step_us > period_us (steps.csv keeps every
ns); its fraction of the measured steps, with an interval from the same bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.analysis.compare import (
    RESAMPLES,
    CellData,
    Estimate,
    cell_data,
    ci95,
    energy_ratio,
    group_label,
    hier_bootstrap,
    interval_level,
    left_out,
)
from harness.analysis.decompose import PARTS
from harness.analysis.runs import CellData as RunCell
from harness.analysis.runs import RunData, load_run
from harness.analysis.steps import slowest_per_step
from harness.errors import InputError
from harness.records import Decomposition

PER_STEPS = 10_000
FLOOR = "floor"
STOCK = "stock"
FIRST = (STOCK, "agent")       # the table's order: stock, the window, the other baselines, the floor


def s_per_10k(us: float) -> float:
    """A per-step figure in us as seconds per 10,000 steps."""
    return us * PER_STEPS / 1e6


@dataclass(frozen=True)
class PartsSplit:
    """A cell's tax split into the decomposition's parts, s per 10,000 steps (traced runs, no CI)."""

    parts: dict[str, float]     # part -> the cell's mean per step minus the floor's, x 10,000
    residual: float             # step minus the sum of its parts, the cell's minus the floor's
    traced_tax: float           # the traced steps' mean tax: the parts' sum plus the residual
    bound: float                # tolerance x (cell's + floor's mean step) x 10,000
    tolerance: float
    within_tolerance: bool      # |sum of the parts - mean-step tax| <= bound
    note: str                   # which parts, what was decomposed

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def as_dict(self) -> dict:
        return {"parts_s": self.parts, "sum_s": self.total, "residual_s": self.residual,
                "traced_tax_s": self.traced_tax, "bound_s": self.bound, "tolerance": self.tolerance,
                "within_tolerance": self.within_tolerance, "note": self.note}


@dataclass(frozen=True)
class CellTax:
    cell: str
    variant: str
    repeats: int
    steps: int
    step_mean_us: float
    step_p50_us: float
    mean_tax: Estimate | None           # s per 10,000 steps; None: no floor to take it against
    p50_tax: Estimate | None
    miss_fraction: Estimate | None      # periodic loops only
    split: PartsSplit | None
    notes: tuple[str, ...] = ()
    paired_tax: Estimate | None = None  # the mean per-step difference to the floor on the same draws
    paired_steps: int = 0
    fanin_mean_us: float | None = None  # fan-out loops: the mean fan-in (slowest agent of a step)
    fanin_tax: Estimate | None = None   # its mean minus the floor's, s per 10,000 steps
    energy_uj: Estimate | None = None   # energy per step, mean over repeats; None: no meter
    energy_vs_stock: Estimate | None = None
    meter: str | None = None            # what the energy covers: steps, or whole repeats (older records)
    eta: float | None = None            # frontier bound / measured, agent CPU (None: no bound for the cell)
    eta_by_repeat: tuple[float, ...] = ()

    def as_dict(self) -> dict:
        def est(e: Estimate | None):
            return e.as_dict() if e is not None else None
        return {"cell": self.cell, "variant": self.variant, "repeats": self.repeats, "steps": self.steps,
                "step_mean_us": self.step_mean_us, "step_p50_us": self.step_p50_us,
                "mean_tax_s": est(self.mean_tax), "p50_tax_s": est(self.p50_tax),
                "paired_mean_tax_s": est(self.paired_tax), "paired_steps": self.paired_steps,
                "deadline_miss_fraction": est(self.miss_fraction),
                "fanin_mean_us": self.fanin_mean_us, "fanin_mean_tax_s": est(self.fanin_tax),
                "energy_per_step_uj": est(self.energy_uj), "energy_vs_stock": est(self.energy_vs_stock),
                "meter": self.meter, "eta": self.eta, "eta_by_repeat": list(self.eta_by_repeat),
                "split": self.split.as_dict() if self.split else None, "notes": list(self.notes)}


@dataclass(frozen=True)
class GroupTax:
    """One arch and matrix point of one run: its cells against its floor."""

    run: str                    # the run directory's name
    profile: str                # the experiment
    label: str                  # arch and matrix point
    floor: str | None           # the floor cell; None: no ok floor cell, no tax
    floor_setting: str
    cells: tuple[CellTax, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"run": self.run, "profile": self.profile, "group": self.label, "floor": self.floor,
                "floor_setting": self.floor_setting, "cells": [c.as_dict() for c in self.cells],
                "notes": list(self.notes)}


@dataclass
class TaxTable:
    groups: list[GroupTax] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)     # run/cell -> why it is not in the table

    def as_dict(self) -> dict:
        return {"unit": f"s per {PER_STEPS} steps", "resamples": RESAMPLES,
                "groups": [g.as_dict() for g in self.groups], "left_out": self.left_out}


# -- computing ------------------------------------------------------------------------------------

def _period_us(c: RunCell) -> float | None:
    wait = ((c.record.spec.get("workload") or {}).get("wait") or {})
    return float(wait["period_us"]) if wait.get("period_us") else None


def _setting(c: RunCell) -> str:
    """What the floor cell's platform was, from its record."""
    p = c.record.spec.get("platform") or {}
    bits = [f"governor {p['governor']}"] if p.get("governor") else []
    if p.get("idle_poll"):
        bits.append("idle=poll")
    if p.get("only_cstate"):
        bits.append(f"only C-state {p['only_cstate']}")
    if p.get("max_cstate") is not None:
        bits.append(f"max_cstate {p['max_cstate']}")
    return ", ".join(bits) or "platform not recorded"


def _figures(steps_us: np.ndarray, period_us: float | None) -> np.ndarray:
    """mean, p50, deadline-miss fraction (NaN for a loop without a period)."""
    miss = float(np.mean(steps_us > period_us)) if period_us else float("nan")
    return np.array([steps_us.mean(), np.percentile(steps_us, 50), miss])


def _decomposition(c: RunCell) -> Decomposition | None:
    dc = c.record.decomposition
    return dc if dc is not None and dc.decomposed and dc.mean_us and dc.step_mean_us is not None else None


def split(cell: Decomposition, floor: Decomposition, mean_tax_s: float, cell_mean_us: float,
          floor_mean_us: float) -> PartsSplit:
    parts = [p for p in PARTS if p in cell.mean_us and p in floor.mean_us]
    taxes = {p: s_per_10k(cell.mean_us[p] - floor.mean_us[p]) for p in parts}
    tol = max(cell.tolerance, floor.tolerance)
    bound = tol * s_per_10k(cell_mean_us + floor_mean_us)
    absent = [p for p in PARTS if p not in parts]
    note = (f"parts: {', '.join(parts)}" + (f" (absent: {', '.join(absent)})" if absent else "")
            + f"; traced runs: {cell.decomposed}/{cell.steps} and {floor.decomposed}/{floor.steps} (floor) steps "
            f"decomposed; compute from {cell.compute_source}")
    if not (cell.within_tolerance and floor.within_tolerance):
        note += "; a cell's own sum/step check failed"
    return PartsSplit(parts=taxes, residual=s_per_10k((cell.residual_mean_us or 0) - (floor.residual_mean_us or 0)),
                      traced_tax=s_per_10k(cell.step_mean_us - floor.step_mean_us), bound=bound, tolerance=tol,
                      within_tolerance=bool(abs(sum(taxes.values()) - mean_tax_s) <= bound), note=note)


def _seed(c: RunCell):
    return (c.record.spec.get("workload") or {}).get("seed")


def _fanout(c: RunCell) -> bool:
    return bool((c.record.spec.get("workload") or {}).get("fanout"))


def fanin_data(c: RunCell) -> CellData:
    """Per (repeat, step) the slowest agent's signal -> done, one array per repeat."""
    st = c.steps()
    rep, step, us = (np.asarray(st[k], dtype=float) for k in ("repeat", "step", "step_us"))
    repeats = tuple(slowest_per_step(rep[rep == r], step[rep == r], us[rep == r]) for r in np.unique(rep))
    return CellData(f"{c.id} fan-in", np.concatenate(repeats), repeats, np.array([]))


def paired_differences(c: RunCell, floor: RunCell) -> tuple[CellData | None, str]:
    """The cell's step latency minus the floor's on the same (repeat, agent, step), one array per
    repeat; None (and why) where the two did not run the same draws."""
    if _seed(c) != _seed(floor):
        return None, f"workload seeds differ ({_seed(c)} against the floor's {_seed(floor)}): not paired"

    def keyed(st: dict[str, np.ndarray]) -> dict[tuple[int, int, int], float]:
        agent = st.get("agent", np.zeros(len(st["step_us"])))
        return {(int(r), int(a), int(k)): float(v)
                for r, a, k, v in zip(st["repeat"], agent, st["step"], st["step_us"], strict=True)}

    a, b = keyed(c.steps()), keyed(floor.steps())
    common = sorted(a.keys() & b.keys())
    if not common:
        return None, "no step in common with the floor: not paired"
    by_repeat: dict[int, list[float]] = {}
    for k in common:
        by_repeat.setdefault(k[0], []).append(a[k] - b[k])
    repeats = tuple(np.asarray(v) for _, v in sorted(by_repeat.items()))
    unmatched = len(a) + len(b) - 2 * len(common)
    note = f"paired on {len(common)} steps" + (f", {unmatched} in one cell only left out" if unmatched else "")
    return CellData(f"{c.id} - {floor.id}", np.concatenate(repeats), repeats, np.array([])), note


# Below this many repeats a percentile bootstrap over them is only their range (with 2 it is exactly
# [min, max], about a 50 % interval): the energy columns then give the range, and say so.
CI_REPEATS_MIN = 5


def _range_level(n: int) -> str:
    return f"range of {n} repeats"


def energy_per_step(d: CellData, seed: int) -> Estimate | None:
    """Mean energy per step over the repeats, a 95 % interval from resampling the repeats, or their
    range under CI_REPEATS_MIN repeats (None: no meter)."""
    e = d.energy_per_step_uj
    if not len(e):
        return None
    if len(e) < CI_REPEATS_MIN:
        return Estimate(float(e.mean()), float(e.min()), float(e.max()), _range_level(len(e)))
    boot = e[np.random.default_rng(seed).integers(0, len(e), size=(RESAMPLES, len(e)))].mean(axis=1)
    return Estimate(float(e.mean()), *ci95(boot), "repeats")


def energy_vs(d: CellData, ref: CellData, seed: int) -> Estimate:
    """The cell's mean energy per step over the reference's: compare.energy_ratio's interval, or under
    CI_REPEATS_MIN repeats the range the repeats allow (lowest over highest, highest over lowest)."""
    a, b = d.energy_per_step_uj, ref.energy_per_step_uj
    n = min(len(a), len(b))
    if n >= CI_REPEATS_MIN:
        return energy_ratio(d, ref, seed)
    return Estimate(float(a.mean() / b.mean()), float(a.min() / b.max()), float(a.max() / b.min()), _range_level(n))


def _rank(c: RunCell) -> tuple[int, str]:
    v = c.record.variant
    return (FIRST.index(v) if v in FIRST else len(FIRST) + (v == FLOOR), v)


def _estimate(value: float, boot: np.ndarray, level: str, scale=s_per_10k) -> Estimate:
    lo, hi = ci95(boot)
    return Estimate(float(scale(value)), float(scale(lo)), float(scale(hi)), level)


def _group(run: RunData, members: Sequence[RunCell], seed: int) -> GroupTax:
    members = sorted(members, key=_rank)
    label = group_label(members[0].record.arch, members[0].record.axes)
    f = next((i for i, c in enumerate(members) if c.record.variant == FLOOR), None)
    data: tuple[CellData, ...] = tuple(cell_data(c) for c in members)
    periods = [_period_us(c) for c in members]
    point = np.array([_figures(d.values, p) for d, p in zip(data, periods, strict=True)])
    boot = hier_bootstrap(data, lambda i, drawn: _figures(drawn, periods[i]), seed)   # (RESAMPLES, cells, 3)
    decs = [_decomposition(c) for c in members]
    stock = next((i for i, c in enumerate(members) if c.record.variant == STOCK), None)
    fanin = None
    if f is not None and all(_fanout(c) for c in members):
        fdata = tuple(fanin_data(c) for c in members)
        fboot = hier_bootstrap(fdata, lambda _, drawn: drawn.mean(), seed)   # (RESAMPLES, cells)
        fanin = (fdata, fboot)
    notes = []
    if f is None:
        notes.append(f"no ok {FLOOR} cell for {label} in this run (variants: "
                     f"{', '.join(c.record.variant for c in members)}): no tax")
    if not any(decs):
        notes.append("no per-step decomposition in this run (no cell probed with dvfs_ramp + wake_path): "
                     "the tax is not split")
    elif f is not None and decs[f] is None:
        notes.append(f"the {FLOOR} cell has no decomposition: the tax is not split")
    cells = []
    for i, (c, d) in enumerate(zip(members, data, strict=True)):
        cnotes = []
        mean_tax = p50_tax = sp = paired = None
        paired_n = 0
        if f is not None:
            level = interval_level(d, data[f])
            diff = boot[:, i, :2] - boot[:, f, :2]
            mean_tax = _estimate(point[i, 0] - point[f, 0], diff[:, 0], level)
            p50_tax = _estimate(point[i, 1] - point[f, 1], diff[:, 1], level)
            if i != f:
                pd, why = paired_differences(c, members[f])
                if pd is not None:
                    pboot = hier_bootstrap((pd,), lambda _, drawn: drawn.mean(), seed)[:, 0]
                    paired = _estimate(float(pd.values.mean()), pboot, interval_level(pd))
                    paired_n = len(pd.values)
                if pd is None or paired_n != len(d.values):
                    cnotes.append(why)
            if decs[i] is not None and decs[f] is not None:
                sp = split(decs[i], decs[f], mean_tax.value, point[i, 0], point[f, 0])
            elif decs[f] is not None:
                cnotes.append("not decomposed")
        miss = None
        if periods[i]:
            miss = _estimate(point[i, 2], boot[:, i, 2], interval_level(d), scale=float)
            recorded = c.record.stats.deadline_miss_fraction if c.record.stats else None
            if recorded is not None and abs(recorded - miss.value) > 1e-9:
                cnotes.append(f"deadline-miss fraction {miss.value:.4f} from steps.csv, {recorded:.4f} in the record")
        fanin_mean = fanin_tax = None
        if fanin is not None:
            fdata, fboot = fanin
            fanin_mean = float(fdata[i].values.mean())
            fanin_tax = _estimate(fanin_mean - float(fdata[f].values.mean()), fboot[:, i] - fboot[:, f],
                                  interval_level(fdata[i], fdata[f]))
        energy = energy_per_step(d, seed)
        vs_stock = (energy_vs(d, data[stock], seed) if energy is not None and stock is not None
                    and len(data[stock].energy_per_step_uj) else None)
        meter = c.record.platform.meter if energy is not None and c.record.platform else None
        fr = c.record.platform.frontier if c.record.platform else None
        cells.append(CellTax(cell=c.id, variant=c.record.variant, repeats=len(d.repeats), steps=len(d.values),
                             step_mean_us=float(point[i, 0]), step_p50_us=float(point[i, 1]), mean_tax=mean_tax,
                             p50_tax=p50_tax, miss_fraction=miss, split=sp, notes=tuple(cnotes),
                             paired_tax=paired, paired_steps=paired_n, energy_uj=energy, energy_vs_stock=vs_stock,
                             meter=meter, fanin_mean_us=fanin_mean, fanin_tax=fanin_tax,
                             eta=fr.eta if fr else None, eta_by_repeat=tuple(fr.eta_by_repeat) if fr else ()))
    whole = [c.variant for c in cells if c.meter == "repeat"]
    if whole:
        notes.append(f"energy per step over whole repeats (warm-up and the loop's start and end counted: records "
                     f"older than the loop's own meter): {', '.join(whole)}")
    return GroupTax(run=run.dir.name, profile=run.experiment, label=label,
                    floor=members[f].id if f is not None else None,
                    floor_setting=_setting(members[f]) if f is not None else "-", cells=tuple(cells),
                    notes=tuple(notes))


def tax_run(run: RunData, seed: int = 1) -> TaxTable:
    if not run.ok:
        why = "; ".join(f"{k}: {v}" for k, v in sorted(left_out(run).items())) or "no cells"
        raise InputError(f"{run.dir}: no ok cell to take a tax of ({why})")
    by_point: dict[tuple, list[RunCell]] = {}
    for c in run.ok:
        by_point.setdefault((c.record.arch, c.axes_key()), []).append(c)
    return TaxTable(groups=[_group(run, cells, seed) for _, cells in sorted(by_point.items())],
                    left_out=left_out(run, f"{run.dir.name}/"))


def tax(run_dirs: Sequence[Path], seed: int = 1) -> TaxTable:
    out = TaxTable()
    for d in run_dirs:
        t = tax_run(load_run(d), seed)
        out.groups += t.groups
        out.left_out.update(t.left_out)
    return out


# -- rendering ------------------------------------------------------------------------------------

def _fmt(e: Estimate | None, digits: int = 2) -> str:
    if e is None or e.value != e.value:
        return "-"
    text = f"{e.value:.{digits}f} [{e.lo:.{digits}f}, {e.hi:.{digits}f}]"
    if e.level.startswith("repeats"):
        return text
    if e.level.startswith("range"):
        return text + f" ({e.level})"
    return text + (" (steps only)" if e.level.startswith("steps") else " (1 repeat)")


def _profiles(table: TaxTable) -> list[str]:
    """Each group's profile, with its run's name where two runs share an experiment."""
    runs: dict[str, set[str]] = {}
    for g in table.groups:
        runs.setdefault(g.profile, set()).add(g.run)
    return [g.profile if len(runs[g.profile]) == 1 else f"{g.profile} ({g.run})" for g in table.groups]


def _eta(c: CellTax) -> str:
    if c.eta is None:
        return "-"
    spread = f" ({min(c.eta_by_repeat):.3f}-{max(c.eta_by_repeat):.3f})" if c.eta_by_repeat else ""
    return f"{c.eta:.3f}{spread}"


def rows(table: TaxTable) -> tuple[list[str], list[list[str]]]:
    """The headline table: a row a cell."""
    misses = any(c.miss_fraction for g in table.groups for c in g.cells)
    head = ["profile", "arch", "variant", "repeats / steps", "step mean / p50 us",
            f"mean-step tax, s / {PER_STEPS:,} steps [95 % CI]",
            f"paired mean-step tax, s / {PER_STEPS:,} steps [95 % CI]", f"p50 tax, s / {PER_STEPS:,} steps [95 % CI]"]
    head += ["deadline-miss fraction [95 % CI]"] if misses else []
    fanins = any(c.fanin_tax for g in table.groups for c in g.cells)
    head += ["fan-in mean us", f"fan-in mean tax, s / {PER_STEPS:,} steps [95 % CI]"] if fanins else []
    energy = any(c.energy_uj for g in table.groups for c in g.cells)
    head += ["energy / step, mJ [95 % CI]", "energy vs stock [95 % CI]"] if energy else []   # or a range
    etas = any(c.eta is not None for g in table.groups for c in g.cells)
    head += ["eta, frontier / measured (repeats)"] if etas else []
    out = []
    for profile, g in zip(_profiles(table), table.groups, strict=True):
        for c in g.cells:
            row = [profile, g.label, c.variant, f"{c.repeats} / {c.steps}",
                   f"{c.step_mean_us:.1f} / {c.step_p50_us:.1f}", _fmt(c.mean_tax),
                   _fmt(c.paired_tax) if g.floor != c.cell else "-", _fmt(c.p50_tax)]
            row += [_fmt(c.miss_fraction, 3)] if misses else []
            if fanins:
                row += [f"{c.fanin_mean_us:.1f}" if c.fanin_mean_us is not None else "-", _fmt(c.fanin_tax)]
            if energy:
                mj = (Estimate(c.energy_uj.value / 1e3, c.energy_uj.lo / 1e3, c.energy_uj.hi / 1e3, c.energy_uj.level)
                      if c.energy_uj else None)
                row += [_fmt(mj, 3), "-" if c.variant == STOCK else _fmt(c.energy_vs_stock)]
            if etas:
                row.append(_eta(c))
            out.append(row)
    return head, out


def split_rows(table: TaxTable) -> tuple[list[str], list[list[str]]] | None:
    """The split, s per 10,000 steps, for the cells that have one (None: no cell has)."""
    have = [(p, g, c) for p, g in zip(_profiles(table), table.groups, strict=True) for c in g.cells if c.split]
    if not have:
        return None
    head = ["profile", "arch", "variant", *PARTS, "residual", "sum of parts", "mean-step tax", "within bound"]
    out = []
    for profile, g, c in have:
        s = c.split
        out.append([profile, g.label, c.variant, *(f"{s.parts[p]:.3f}" if p in s.parts else "-" for p in PARTS),
                    f"{s.residual:.3f}", f"{s.total:.3f}", f"{c.mean_tax.value:.3f}",
                    f"{'yes' if s.within_tolerance else 'NO'} (+-{s.bound:.3f})"])
    return head, out


def notes(table: TaxTable) -> list[str]:
    profiles = _profiles(table)
    out = [f"{RESAMPLES} resamples of a hierarchical bootstrap (repeats, then steps within each); each cell's tax "
           "is its figure minus the floor's in the same resample"]
    for profile, g in zip(profiles, table.groups, strict=True):
        where = f"{profile} {g.label}"
        if g.floor is not None:
            out.append(f"{where}: floor {g.floor} ({g.floor_setting})")
        out += [f"{where}: {n}" for n in g.notes]
        out += [f"{where} {c.variant}: {n}" for c in g.cells for n in c.notes]
        out += [f"{where} {c.variant}: split {c.split.note}" for c in g.cells if c.split]
    out += [f"left out {k}: {v}" for k, v in sorted(table.left_out.items())]
    return out


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    return [_md_row(head), _md_row(["---"] * len(head)), *(_md_row(r) for r in body)]


def markdown(table: TaxTable) -> str:
    lines = [f"Slowpath tax: step latency minus the floor's (same run, same arch), in seconds per {PER_STEPS:,} "
             "steps.", "", *_md_table(*rows(table))]
    sp = split_rows(table)
    if sp is not None:
        lines += ["", f"Split into the decomposition's parts (mean per step minus the floor's, s per {PER_STEPS:,} "
                  "steps; traced runs, point values):", "", *_md_table(*sp)]
    lines += [""] + [f"- {n}".replace("\n", " ") for n in notes(table)]
    return "\n".join(lines) + "\n"
