"""A run's summary (table, summary.json), tidy all-steps table and latency CDF plot, derived from
its records alone.

`write_run_report` is what `python -m harness report RUN_DIR` runs and what the runner calls after
its last cell, so the summary a run prints is always the one its stored data gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from harness import records  # noqa: E402
from harness.analysis import tidy  # noqa: E402
from harness.analysis.runs import RunData, load_run  # noqa: E402
from harness.kernel.cache import atomic_write_text  # noqa: E402

COLUMNS = (("steps", "steps", "{:.0f}"), ("wake_p50_us", "wake p50", "{:.1f}"),
           ("wake_p99_us", "wake p99", "{:.1f}"), ("wake_p999_us", "wake p99.9", "{:.1f}"),
           ("step_p50_us", "step p50", "{:.1f}"), ("step_p99_us", "step p99", "{:.1f}"),
           ("compute_p50_us", "compute p50", "{:.1f}"), ("energy_per_step_uj", "energy/step uJ", "{:.0f}"),
           ("avg_power_mw", "power mW", "{:.0f}"), ("eta", "eta", "{:.3f}"),
           ("probe_overhead_p50", "probe cost p50", "{:+.1%}"))


def _row(cell) -> dict:
    """A record as a summary row: its step statistics, energy and probe overhead side by side."""
    r = cell.record
    stats = dict(r.stats.model_dump()) if r.stats else {}
    if r.platform:
        stats.update(energy_per_step_uj=r.platform.energy_per_step_uj, avg_power_mw=r.platform.avg_power_mw,
                     eta=r.platform.frontier.eta if r.platform.frontier else None)
    if "p50" in r.probe_overhead:
        stats["probe_overhead_p50"] = r.probe_overhead["p50"]
    stats = {k: v for k, v in stats.items() if v is not None}
    accel, timing = (r.guest.accel, r.guest.timing) if r.guest else ("-", "-")
    return {"cell": r.cell, "status": r.status, "reason": r.reason, "accel": accel, "timing": timing,
            "stats": stats}


def _summary_cell(cell) -> records.SummaryCell:
    r = cell.record
    plat, guest = r.platform, r.guest
    return records.SummaryCell(
        cell=r.cell, arch=r.arch, variant=r.variant, axes=r.axes, status=r.status, failure=r.failure,
        reason=r.reason, accel=guest.accel if guest else None, timing=guest.timing if guest else None,
        repeats=r.repeats, cell_wall_s=r.cell_wall_s, stats=r.stats,
        energy_per_step_uj=plat.energy_per_step_uj if plat else None, avg_power_mw=plat.avg_power_mw if plat else None,
        eta=plat.frontier.eta if plat and plat.frontier else None, probe_overhead_p50=r.probe_overhead.get("p50"),
        decomposition=r.decomposition)


def run_summary(run: RunData) -> records.RunSummary:
    cells = [_summary_cell(c) for c in sorted(run.ok + run.failed, key=lambda c: c.id)]
    cells += [records.SummaryCell(cell=name, status="unusable", reason=why)
              for name, why in sorted(run.problems.items())]
    return records.RunSummary(experiment=run.experiment, run_id=run.index.run_id if run.index else run.dir.name,
                              complete=run.index.complete if run.index else None, cells=cells)


@dataclass
class RunReport:
    run: RunData
    table: Table | None = None
    summary: Path | None = None
    summary_json: Path | None = None
    tidy: list[Path] = field(default_factory=list)
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)


def write_run_report(run_dir: Path) -> RunReport:
    """summary.txt, summary.json, the tidy all-steps table and latency_cdf.png of a run directory, from
    its records; what was left out and why goes into the notes (and into summary.txt)."""
    run = load_run(run_dir)
    rep = RunReport(run)
    cells = sorted(run.ok + run.failed, key=lambda c: c.id)
    rows = [_row(c) for c in cells]
    for name, why in sorted(run.problems.items()):
        rows.append({"cell": name, "status": "unusable", "reason": why, "stats": {}})
        rep.notes.append(f"left out {name}: {why}")
    for c in run.failed:
        rep.notes.append(f"failed {c.id}: {c.record.reason}")
    if not rows:
        return rep
    title = f"{run.experiment} ({run_dir.name})"
    rep.table = summary_table(rows, title)
    rep.summary = run_dir / records.SUMMARY
    atomic_write_text(rep.summary, summary_text(rows) + agent_workload_text(run.ok) + decomposition_text(run.ok)
                      + "".join(f"# {n}\n" for n in rep.notes))
    rep.summary_json = run_dir / records.SUMMARY_JSON
    records.write(rep.summary_json, run_summary(run))
    if run.ok:
        rep.tidy, note = write_tidy([run], run_dir / records.TIDY_CSV, run_dir / records.TIDY_PARQUET)
        if note:
            rep.notes.append(note)
    series = {}
    for c in run.ok:
        st = c.steps()
        series.setdefault(c.record.arch, {})[c.id] = {"step_us": st["step_us"], "wake_us": st["wake_us"]}
    if series:
        rep.plot = latency_cdf(series, run_dir / records.CDF_PLOT, title)
        rep.notes.append(f"plot: {rep.plot}")
    return rep


def write_tidy(runs: list[RunData], *outs: Path) -> tuple[list[Path], str]:
    """The tidy all-steps table of `runs` into each of `outs` (by suffix); a Parquet file is skipped,
    with a note, when pyarrow is missing."""
    table = tidy.tidy_table(runs)
    written, note = [], ""
    for out in outs:
        if out.suffix.lower() == ".parquet" and not tidy.have_pyarrow():
            note = tidy.NO_PYARROW
            continue
        written.append(tidy.write(table, out))
    return written, note


def summary_table(rows: list[dict], title: str) -> Table:
    """rows: {'cell', 'status', 'accel', 'timing', 'stats': {...}, 'reason'}; latencies in us."""
    t = Table(title=title)
    t.add_column("cell")
    t.add_column("status")
    t.add_column("accel/timing")
    for _, head, _ in COLUMNS:
        unitless = head.startswith(("steps", "probe", "eta")) or head.endswith(("uJ", "mW"))
        t.add_column(head + ("" if unitless else " us"), justify="right")
    for r in rows:
        stats = r.get("stats") or {}
        cells = [fmt.format(stats[k]) if k in stats else "-" for k, _, fmt in COLUMNS]
        status = r["status"] if r["status"] == "ok" else f"{r['status'].upper()}: {r.get('reason', '')[:60]}"
        # Text, not markup: a reason may quote the guest
        t.add_row(Text(r["cell"]), Text(status), Text(f"{r.get('accel', '-')}/{r.get('timing', '-')}"),
                  *(Text(c) for c in cells))
    return t


def summary_text(rows: list[dict]) -> str:
    head = ["cell", "status", "accel", "timing"] + [h for _, h, _ in COLUMNS]
    lines = ["\t".join(head)]
    for r in rows:
        stats = r.get("stats") or {}
        lines.append("\t".join([r["cell"], r["status"], r.get("accel", "-"), r.get("timing", "-")]
                               + [fmt.format(stats[k]) if k in stats else "-" for k, _, fmt in COLUMNS]))
    return "\n".join(lines) + "\n"


def agent_workload_text(cells) -> str:
    """Deadline misses (periodic loops) and fan-in latency (fan-out loops), for the cells that have
    them; nothing for a run that has none (its summary stays as it was)."""
    rows = [c.record for c in sorted(cells, key=lambda c: c.id) if c.record.stats
            and (c.record.stats.deadline_misses is not None or c.record.stats.fanin_p50_us is not None)]
    if not rows:
        return ""
    def f(v, fmt):
        return "-" if v is None else fmt.format(v)
    lines = ["# agent workloads: deadline misses (measured steps, all repeats) and fan-in (signal -> last agent done)",
             "\t".join(["cell", "deadline misses", "miss fraction", "fan-in p50 us", "fan-in p99 us"])]
    for r in rows:
        st = r.stats
        lines.append("\t".join([r.cell, f(st.deadline_misses, "{:d}"), f(st.deadline_miss_fraction, "{:.4f}"),
                                f(st.fanin_p50_us, "{:.1f}"), f(st.fanin_p99_us, "{:.1f}")]))
    return "\n".join(lines) + "\n"


def decomposition_text(cells) -> str:
    """The per-step decomposition of the traced run (mean us per step; the means add up to the
    step's mean), for the cells that have one."""
    from harness.analysis.decompose import PARTS
    rows = [c.record for c in sorted(cells, key=lambda c: c.id) if c.record.decomposition is not None]
    if not rows:
        return ""
    tol = rows[0].decomposition.tolerance
    lines = [f"# decomposition of the traced run: mean us per step; sum/step at p50 (within +-{tol:.0%}: ok)",
             "\t".join(["cell", "steps", "decomposed", "step", *PARTS, "sum/step p50", "ok"])]
    for r in rows:
        dc = r.decomposition
        lines.append("\t".join([r.cell, str(dc.steps), str(dc.decomposed),
                                "-" if dc.step_mean_us is None else f"{dc.step_mean_us:.1f}",
                                *(f"{dc.mean_us[p]:.1f}" if p in dc.mean_us else "-" for p in PARTS),
                                "-" if dc.sum_ratio_p50 is None else f"{dc.sum_ratio_p50:.3f}",
                                {True: "ok", False: "OUT", None: "-"}[dc.within_tolerance]]))
    return "\n".join(lines) + "\n"


def _latency_axis(ax, data: list[np.ndarray]) -> None:
    """Log scale when the cells span a decade or more; within one decade a log axis only prints
    colliding minor labels, so it stays linear."""
    vals = np.concatenate([d[d > 0] for d in data if len(d)]) if data else np.array([])
    if len(vals) and vals.max() / vals.min() >= 10:
        ax.set_xscale("log")
        # across fewer than three decades, powers of ten alone leave one or two labels: add 2 and 5
        decades = np.log10(vals.max() / vals.min())
        subs = (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def latency_cdf(series: dict[str, dict[str, dict[str, np.ndarray]]], out: Path, title: str) -> Path:
    """Per arch (a row each: their step times differ by construction), one CDF line per cell for
    step latency and wake latency (us, log x axis)."""
    arches = sorted(series)
    fig, axes = plt.subplots(len(arches), 2, figsize=(12, 4.2 * len(arches)), constrained_layout=True,
                             squeeze=False)
    for row, arch in zip(axes, arches, strict=True):
        for ax, metric, label in ((row[0], "step_us", "step latency (signal -> compute done)"),
                                  (row[1], "wake_us", "wake latency (signal -> running)")):
            for cell, data in series[arch].items():
                x = np.sort(np.asarray(data[metric], dtype=float))
                if len(x) == 0:
                    continue
                y = np.arange(1, len(x) + 1) / len(x)
                ax.plot(np.maximum(x, 1e-3), y, label=cell, linewidth=1.2)
            _latency_axis(ax, [np.asarray(d[metric], dtype=float) for d in series[arch].values()])
            ax.set_xlabel(f"{label} [us]")
            ax.set_ylabel("fraction of steps")
            ax.set_title(arch, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        row[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
