"""The simulated platform's calibration (experiments/sim_platform.yaml), from a run's records.

One owner for the figures: the guest tests (tests/test_sim_platform.py) assert on them and
scripts/calibration_table.py prints them as the README's table. Per (preset, arch):

- compute time at the middle and lowest OPP, and of a short unit at the lowest, over fmax;
- the wakeup cost of the deepest idle state over the shallowest;
- the agent CPU's metered energy over the energy model's, per repeat;
- eta against the bound restricted to the cell's own OPP and state (the bound and the meter agree);
- the wakeup ordering: the boost is requested only after the exit, and a run that woke at a low
  OPP lasts exit + transition longer than one that woke at fmax.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.analysis.efficiency import bound
from harness.analysis.runs import CellData, load_run
from harness.platform.energy import PowerModel
from harness.spec.model import SimPlatform

PRESET_AXIS = "platform.sim.preset"
ORDER_TRANSITION_US = 300          # the `order` variant's transition_latency_us


@dataclass(frozen=True)
class Ratio:
    got: float
    want: float

    @property
    def error(self) -> float:
        return self.got / self.want - 1.0


@dataclass(frozen=True)
class Order:
    """The `order` cell: runs of the agent that followed a wakeup, split by the OPP they woke at."""
    low_runs: int                  # woke below fmax and changed OPP during the run
    high_runs: int                 # woke at fmax and stayed there
    request_after_signal_us: float  # median, low runs: when the boost was requested
    exit_us: float
    low_run_us: float              # median duration of a low run
    high_run_us: float             # median duration of a high run
    want_low_run_us: float         # median of what each low run should take: slow until exit +
                                   # transition, then the rest of the work at fmax
    max_low_khz: int
    fmax_khz: int


@dataclass
class Calibration:
    preset: str
    arch: str
    sim: SimPlatform
    model: PowerModel
    ratios: dict[str, Ratio] = field(default_factory=dict)   # mid/max, min/max, short min/max
    short_max_us: float | None = None
    exit_cost: Ratio | None = None
    deep_entries: tuple[int, int] | None = None                # (deepest, shallowest) in the `deep` cell
    meter: list[float] = field(default_factory=list)           # metered / model, per repeat and OPP
    own_eta: list[float] = field(default_factory=list)         # per OPP, max / mid / min
    eta: list[float] = field(default_factory=list)             # the cells' own eta (all states and OPPs)
    order: Order | None = None
    cmdline_has_coeff: bool = True


def cells_by_preset(run_dirs: list[Path]) -> dict[tuple[str, str], dict[str, CellData]]:
    """The ok cells of calibration runs, by (preset, arch) then variant."""
    out: dict[tuple[str, str], dict[str, CellData]] = {}
    for d in run_dirs:
        for c in load_run(d).ok:
            r = c.record
            out.setdefault((r.axes[PRESET_AXIS], r.arch), {})[r.variant] = c
    return out


def _order(cell: CellData, exit_us: float, fmax: int) -> Order | None:
    path = cell.dir / "probe-dvfs_ramp.csv"
    if not path.exists():
        return None
    with open(path) as f:
        runs = [r for r in csv.DictReader(f) if r["waking_ns"] and r["ramp_ns"] and r["khz_before"]]
    low = [r for r in runs if int(r["khz_before"]) < fmax and int(r["changes"]) > 0]
    high = [r for r in runs if int(r["khz_before"]) == fmax and int(r["changes"]) == 0]
    if not low or not high:
        return Order(len(low), len(high), float("nan"), exit_us, float("nan"), float("nan"), float("nan"), 0, fmax)

    def run_us(r):
        return (int(r["stop_ns"]) - int(r["start_ns"])) / 1000

    w = float(np.median([run_us(r) for r in high]))
    want = []
    for r in low:
        slow = (int(r["waking_ns"]) + int(r["ramp_ns"]) - int(r["start_ns"])) / 1000 + ORDER_TRANSITION_US
        want.append(slow + max(w - slow * int(r["khz_before"]) / fmax, 0.0))
    return Order(low_runs=len(low), high_runs=len(high),
                 request_after_signal_us=float(np.median([int(r["ramp_ns"]) for r in low])) / 1000,
                 exit_us=exit_us, low_run_us=float(np.median([run_us(r) for r in low])), high_run_us=w,
                 want_low_run_us=float(np.median(want)), max_low_khz=max(int(r["khz_before"]) for r in low),
                 fmax_khz=fmax)


def calibrate(preset: str, arch: str, cells: dict[str, CellData]) -> Calibration:
    """The figures of one preset on one arch; a figure whose cells are missing stays empty."""
    ref = cells["opp-max"].record
    sim = SimPlatform.model_validate(ref.spec["platform"]["sim"])
    model = PowerModel.from_sim(sim)
    cal = Calibration(preset, arch, sim, model)
    khz = [o.khz for o in sim.opps]
    fmax, fmid, fmin = khz[-1], khz[(len(khz) - 1) // 2], khz[0]
    t = {v: c.record.stats.compute_mean_us for v, c in cells.items() if c.record.stats}
    for name, (a, b, want) in {"mid/max": ("opp-mid", "opp-max", fmax / fmid),
                               "min/max": ("opp-min", "opp-max", fmax / fmin),
                               "short min/max": ("short-min", "short-max", fmax / fmin)}.items():
        if a in t and b in t:
            cal.ratios[name] = Ratio(t[a] / t[b], want)
    cal.short_max_us = t.get("short-max")
    real = [s for s in sim.cstates if s.name != "POLL"]
    shallow, deepest = real[0], real[-1]
    if "deep" in cells and "deep-off" in cells:
        deep = cells["deep"].record
        cal.exit_cost = Ratio(deep.stats.wake_p50_us - cells["deep-off"].record.stats.wake_p50_us,
                              deepest.exit_latency_us - shallow.exit_latency_us)
        entries = deep.platform.idle_entries
        cal.deep_entries = (entries.get(deepest.name, 0), entries.get(shallow.name, 0))
    for v in ("opp-max", "opp-mid", "opp-min"):
        if v not in cells:
            continue
        rec = cells[v].record
        p = rec.platform
        opp = model.opp(rec.guest.platform_requested["userspace_khz"])
        for e, act, idle in zip(p.agent_energy_per_step_by_repeat_uj, p.agent_active_per_step_by_repeat_us,
                                p.agent_idle_per_step_by_repeat_us, strict=True):
            cal.meter.append(e / ((model.active_uw(opp) * act + model.idle_uw(shallow.name, opp) * idle) / 1e6))
        fr = p.frontier
        if fr is None:
            cal.own_eta.append(float("nan"))
            continue
        # at the cell's own OPP, at no less than the time that OPP needs (the emulation's frequency
        # error may make a cell a few % faster than the OPP allows)
        least = shallow.exit_latency_us + fr.step_cycles * 1000 / opp.khz
        own = bound(model, fr.step_cycles, fr.other_cycles, fr.period_us, max(fr.latency_us, least),
                    states=[shallow.name], opps=[opp.khz])
        cal.own_eta.append(own.energy_uj / fr.energy_uj if own else float("nan"))
        cal.eta.append(fr.eta)
    if "order" in cells:
        cal.order = _order(cells["order"], deepest.exit_latency_us, fmax)
    cal.cmdline_has_coeff = all("sim_cpufreq.dyn_coeff=" in " ".join(c.record.guest.kernel_cmdline)
                                for c in cells.values())
    return cal


def calibrations(run_dirs: list[Path]) -> list[Calibration]:
    return [calibrate(preset, arch, cells) for (preset, arch), cells in sorted(cells_by_preset(run_dirs).items())
            if "opp-max" in cells]


def table(cals: list[Calibration]) -> list[str]:
    """The README's calibration table, one markdown row per (preset, arch)."""
    lines = ["| preset | arch | mid/max (want) | min/max (want) | short min/max (want) | deepest exit cost (want) "
             "| meter vs model | eta at own OPP+state | wakeup ordering |", "|" + "---|" * 9]
    for c in cals:
        def ratio(name, c=c):
            r = c.ratios.get(name)
            return f"{r.got:.3f} ({r.want:.3f})" if r else "-"

        exit_cost = f"{c.exit_cost.got:.0f} us ({c.exit_cost.want:.0f})" if c.exit_cost else "-"
        meter = f"{min(c.meter):.4f}-{max(c.meter):.4f}" if c.meter else "-"
        eta = ", ".join(f"{e:.3f}" for e in c.own_eta) or "-"
        o = c.order
        if o is None:
            order = "-"
        elif not o.low_runs or not o.high_runs:
            order = f"{o.low_runs} low-OPP wakeups"
        else:
            order = (f"request {o.request_after_signal_us:.0f} us after signal (exit {o.exit_us:.0f}); "
                     f"run {o.low_run_us:.0f} vs {o.high_run_us:.0f} us ({o.low_runs})")
        lines.append(f"| {c.preset} | {c.arch} | {ratio('mid/max')} | {ratio('min/max')} | {ratio('short min/max')} | "
                     f"{exit_cost} | {meter} | {eta} | {order} |")
    return lines
