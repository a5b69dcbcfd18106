"""The end of a run: a summary table per cell and a latency CDF plot comparing the cells."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

COLUMNS = (("steps", "steps", "{:.0f}"), ("wake_p50_us", "wake p50", "{:.1f}"),
           ("wake_p99_us", "wake p99", "{:.1f}"), ("wake_p999_us", "wake p99.9", "{:.1f}"),
           ("step_p50_us", "step p50", "{:.1f}"), ("step_p99_us", "step p99", "{:.1f}"),
           ("compute_p50_us", "compute p50", "{:.1f}"), ("energy_per_step_uj", "energy/step uJ", "{:.0f}"),
           ("avg_power_mw", "power mW", "{:.0f}"), ("probe_overhead_p50", "probe cost p50", "{:+.1%}"))


def summary_table(rows: list[dict], title: str) -> Table:
    """rows: {'cell', 'status', 'accel', 'timing', 'stats': {...}, 'reason'}; latencies in us."""
    t = Table(title=title)
    t.add_column("cell")
    t.add_column("status")
    t.add_column("accel/timing")
    for _, head, _ in COLUMNS:
        t.add_column(head + ("" if head.startswith(("steps", "probe")) or head.endswith(("uJ", "mW")) else " us"),
                     justify="right")
    for r in rows:
        stats = r.get("stats") or {}
        cells = [fmt.format(stats[k]) if k in stats else "-" for k, _, fmt in COLUMNS]
        status = r["status"] if r["status"] != "failed" else f"FAILED: {r.get('reason', '')[:60]}"
        t.add_row(r["cell"], status, f"{r.get('accel', '-')}/{r.get('timing', '-')}", *cells)
    return t


def summary_text(rows: list[dict]) -> str:
    head = ["cell", "status", "accel", "timing"] + [h for _, h, _ in COLUMNS]
    lines = ["\t".join(head)]
    for r in rows:
        stats = r.get("stats") or {}
        lines.append("\t".join([r["cell"], r["status"], r.get("accel", "-"), r.get("timing", "-")]
                               + [fmt.format(stats[k]) if k in stats else "-" for k, _, fmt in COLUMNS]))
    return "\n".join(lines) + "\n"


def latency_cdf(series: dict[str, dict[str, np.ndarray]], out: Path, title: str) -> Path:
    """One CDF line per cell for step latency and wake latency (us, log x axis)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for ax, metric, label in ((axes[0], "step_us", "step latency (signal -> compute done)"),
                              (axes[1], "wake_us", "wake latency (signal -> running)")):
        for cell, data in series.items():
            x = np.sort(np.asarray(data[metric], dtype=float))
            if len(x) == 0:
                continue
            y = np.arange(1, len(x) + 1) / len(x)
            ax.plot(np.maximum(x, 1e-3), y, label=cell, linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} [us]")
        ax.set_ylabel("fraction of steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
