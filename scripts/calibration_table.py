"""The simulated platform's calibration per preset, as the README's table, from calibration runs.

    python scripts/calibration_table.py RUN_DIR [RUN_DIR ...]

Reads the records of experiments/sim_platform.yaml runs (one per arch, or one with both) and prints
one markdown row per (preset, arch) with the figures tests/test_sim_platform.py checks: compute
time ratios against fmax, the wakeup cost of the deepest state, the meter against the energy model,
eta against the bound restricted to the cell's own OPP and state, and the wakeup ordering.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.efficiency import bound  # noqa: E402
from harness.analysis.runs import load_run  # noqa: E402
from harness.platform.energy import PowerModel  # noqa: E402
from harness.spec.model import SimPlatform  # noqa: E402


def _cells(run_dirs: list[Path]) -> dict[tuple[str, str], dict[str, object]]:
    out: dict[tuple[str, str], dict[str, object]] = {}
    for d in run_dirs:
        run = load_run(d)
        for c in run.ok:
            r = c.record
            out.setdefault((r.axes["platform.sim.preset"], r.arch), {})[r.variant] = c
    return out


def _order(cell, exit_us: float, fmax: int) -> str:
    path = cell.dir / "probe-dvfs_ramp.csv"
    if not path.exists():
        return "-"
    with open(path) as f:
        runs = [r for r in csv.DictReader(f) if r["waking_ns"] and r["ramp_ns"] and r["khz_before"]]
    low = [r for r in runs if int(r["khz_before"]) < fmax and int(r["changes"]) > 0]
    high = [r for r in runs if int(r["khz_before"]) == fmax and int(r["changes"]) == 0]
    if not low or not high:
        return f"{len(low)} low-OPP wakeups"
    ramp = np.median([int(r["ramp_ns"]) for r in low]) / 1000
    dur = np.median([(int(r["stop_ns"]) - int(r["start_ns"])) / 1000 for r in low])
    fast = np.median([(int(r["stop_ns"]) - int(r["start_ns"])) / 1000 for r in high])
    return f"request {ramp:.0f} us after signal (exit {exit_us:.0f}); run {dur:.0f} vs {fast:.0f} us ({len(low)})"


def rows(run_dirs: list[Path]) -> list[str]:
    lines = ["| preset | arch | mid/max (want) | min/max (want) | short min/max (want) | deepest exit cost (want) "
             "| meter vs model | eta at own OPP+state | wakeup ordering |", "|" + "---|" * 9]
    for (preset, arch), cells in sorted(_cells(run_dirs).items()):
        try:
            ref = cells["opp-max"].record
        except KeyError:
            continue
        sim = SimPlatform.model_validate(ref.spec["platform"]["sim"])
        model = PowerModel.from_sim(sim)
        khz = [o.khz for o in sim.opps]
        fmax, fmid, fmin = khz[-1], khz[(len(khz) - 1) // 2], khz[0]
        t = {v: c.record.stats.compute_mean_us for v, c in cells.items() if c.record.stats}
        real = [s for s in sim.cstates if s.name != "POLL"]
        shallow = real[0].name

        def ratio(a, b, want, t=t):
            return f"{t[a] / t[b]:.3f} ({want:.3f})" if a in t and b in t else "-"

        exit_cost = "-"
        if "deep" in cells and "deep-off" in cells:
            got = cells["deep"].record.stats.wake_p50_us - cells["deep-off"].record.stats.wake_p50_us
            exit_cost = f"{got:.0f} us ({real[-1].exit_latency_us - real[0].exit_latency_us})"
        meter, etas = [], []
        for v in ("opp-max", "opp-mid", "opp-min"):
            if v not in cells:
                continue
            p = cells[v].record.platform
            opp = model.opp(cells[v].record.guest.platform_requested["userspace_khz"])
            for e, act, idle in zip(p.agent_energy_per_step_by_repeat_uj, p.agent_active_per_step_by_repeat_us,
                                    p.agent_idle_per_step_by_repeat_us, strict=True):
                meter.append(e / ((model.active_uw(opp) * act + model.idle_uw(shallow, opp) * idle) / 1e6))
            fr = p.frontier
            if fr is not None:
                least = model.state(shallow).exit_latency_us + fr.step_cycles * 1000 / opp.khz
                b = bound(model, fr.step_cycles, fr.other_cycles, fr.period_us, max(fr.latency_us, least),
                          states=[shallow], opps=[opp.khz])
                etas.append(b.energy_uj / fr.energy_uj if b else float("nan"))
        meter_s = f"{min(meter):.4f}-{max(meter):.4f}" if meter else "-"
        eta_s = ", ".join(f"{e:.3f}" for e in etas) or "-"
        order = _order(cells["order"], real[-1].exit_latency_us, fmax) if "order" in cells else "-"
        lines.append(f"| {preset} | {arch} | {ratio('opp-mid', 'opp-max', fmax / fmid)} | "
                     f"{ratio('opp-min', 'opp-max', fmax / fmin)} | {ratio('short-min', 'short-max', fmax / fmin)} | "
                     f"{exit_cost} | {meter_s} | {eta_s} | {order} |")
    return lines


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("\n".join(rows([Path(a) for a in sys.argv[1:]])))
