"""One self-contained HTML report of one or more run directories, from their records alone.

`python -m harness report RUN_DIR... -o report.html` writes it: every figure inline (SVG), the
style inline, no script, so it opens offline and can be mailed or archived as one file. Cells are
faceted by arch, and where energy is drawn by arch and simulated platform; failed and unusable
cells are left out of every figure and named with their reasons.

The quantile table's intervals are compare's hierarchical bootstrap (the repeat is the independent
unit; steps are resampled within each drawn repeat), so the report and `compare` agree.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from harness.analysis import compare
from harness.analysis import report_figures as figs
from harness.analysis.runs import CellData, RunData
from harness.kernel.cache import atomic_write_text

QUANTILES = (50.0, 90.0, 99.0, 99.9)
METRICS = (("step_us", "step latency (signal -> step done)"), ("wake_us", "wake latency (signal -> running)"))
TEMPLATE = "report.html.j2"
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                          autoescape=True, trim_blocks=True, lstrip_blocks=True)


def sig(v: float | None, digits: int = 4) -> str:
    """`digits` significant digits in plain notation (12345.6 -> "12346", 19.569 -> "19.57")."""
    if v is None or not np.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    decimals = max(digits - 1 - int(np.floor(np.log10(abs(v)))), 0)
    return f"{v:.{decimals}f}"


def fmt_ci(value: float, lo: float, hi: float, digits: int = 4) -> str:
    """value [lo, hi] with at least `digits` significant digits, more until values that differ read
    differently (never "1.00 [1.00, 1.00]" for an interval that has a width)."""
    if not np.isfinite(value):
        return "-"
    vals = [value, lo, hi]
    distinct = len({round(v, 9) for v in vals if np.isfinite(v)})
    for d in range(digits, 9):
        texts = [sig(v, d) for v in vals]
        if len(set(texts)) >= distinct:
            break
    return f"{texts[0]} [{texts[1]}, {texts[2]}]"


def fmt_range(values: Sequence[float]) -> str:
    """mean [min, max] of the repeats."""
    return f"{sig(float(np.mean(values)))} [{sig(min(values))}, {sig(max(values))}]" if len(values) else "-"


@dataclass
class Facet:
    """The cells of one arch (or one arch and platform) and what the page shows of them."""

    key: str
    title: str
    cells: list[figs.CellView]
    figures: dict[str, str] = field(default_factory=dict)   # section -> inline SVG
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run_names(runs: Sequence[RunData]) -> list[str]:
    names = [r.dir.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.dir) for r in runs]


def _label(run: str, c: CellData, several: bool) -> str:
    """A cell's name in the report: its id, after its run's name when the report has several runs."""
    return f"{run}/{c.id}" if several else c.id


def _views(runs: Sequence[RunData], names: list[str]) -> list[tuple[CellData, figs.CellView]]:
    """Every ok cell with its view, its colour one of its arch's."""
    cells = [(name, c) for name, run in zip(names, runs, strict=True) for c in sorted(run.ok, key=lambda c: c.id)]
    out: list[tuple[CellData, figs.CellView]] = []
    for arch in sorted({c.record.arch for _, c in cells}):
        mine = [(name, c) for name, c in cells if c.record.arch == arch]
        for (name, c), (color, dashes) in zip(mine, figs.palette(len(mine)), strict=True):
            out.append((c, figs.CellView(_label(name, c, len(runs) > 1), name, c.record.variant, color, c.record,
                                         c.steps(), dashes)))
    return out


def _platform(c: figs.CellView) -> tuple[str, str]:
    """(key, label) of the simulated platform a cell was metered on: its sim spec, named by its preset."""
    sim = (c.record.spec.get("platform") or {}).get("sim")
    if not sim:
        return "none", "no simulated platform"
    return json.dumps(sim, sort_keys=True), str(sim.get("preset") or "custom platform")


def _unambiguous(cells: list[figs.CellView]) -> list[figs.CellView]:
    """Point labels: the variant, and its run where two cells of the facet share a variant."""
    seen: dict[str, int] = {}
    for c in cells:
        seen[c.short] = seen.get(c.short, 0) + 1
    return [c if seen[c.short] == 1 else dataclasses.replace(c, short=f"{c.short} [{c.run}]") for c in cells]


def quantile_rows(cells: list[figs.CellView], runs_cells: dict[str, CellData]) -> list[dict]:
    """Per cell and metric: pooled quantiles with their hierarchical-bootstrap 95 % intervals."""
    rows = []
    for c in cells:
        row: dict = {"label": c.label, "steps": len(c.steps["step_us"]), "metrics": {}}
        for col, _ in METRICS:
            d = compare.cell_data(runs_cells[c.label], col)
            boot = compare.hier_quantiles((d,), list(QUANTILES), seed=1)[:, 0, :]
            est = np.percentile(d.values, QUANTILES)
            row["metrics"][col] = [fmt_ci(float(v), *compare.ci95(boot[:, i])) for i, v in enumerate(est)]
            row.update(level=compare.interval_level(d), repeats=len(d.repeats))
        rows.append(row)
    return rows


def energy_rows(cells: list[figs.CellView]) -> list[dict]:
    """The Pareto's figures as a table: latency, energy, bound and eta (bound / measured) per cell."""
    rows = []
    for c in cells:
        p = c.record.platform
        f = p.frontier
        rows.append({"label": c.label, "latency": fmt_range(figs.repeat_means(c)),
                     "energy": fmt_range(p.agent_energy_per_step_by_repeat_uj),
                     "platform_energy": sig(p.energy_per_step_uj), "bound": sig(f.bound_uj) if f else "-",
                     "eta": f"{f.eta:.4f}" if f else "-",
                     "eta_by_repeat": ", ".join(f"{e:.4f}" for e in f.eta_by_repeat) if f else "-",
                     "state": f"{f.state} @ {', '.join(f'{k // 1000}' for k in f.opps_khz)} MHz" if f else
                     "no frontier in the record"})
    return rows


def provenance_row(run: str, label: str, c: CellData) -> dict:
    r = c.record
    g, k = r.guest, r.kernel
    host = g.host if g else {}
    sim = (r.spec.get("platform") or {}).get("sim") or {}
    return {"run": run, "run_id": r.run_id, "cell": r.cell, "label": label, "arch": r.arch,
            "variant": r.variant, "status": r.status if r.status == "ok" else f"{r.status}: {r.failure or '?'}",
            "kernel_key": k.key if k else "-", "kernel_release": (k.release or "-") if k else "-",
            "kernel_request": k.request if k else "-",
            "timing": f"{g.accel}, {g.timing_label}" if g else "-", "accel_reason": g.accel_reason if g else "",
            "cpu_model": g.cpu_model if g else "-", "qemu": host.get("qemu", "-"),
            "host": ", ".join(f"{v}" for kk, v in host.items() if kk in ("host_cpu", "host_kernel", "host_machine")),
            "cmdline": " ".join(g.kernel_cmdline) if g else "", "platform": str(sim.get("preset") or "-"),
            "repeats": r.repeats, "finished": r.finished[:19].replace("T", " "),
            "wall": f"{r.cell_wall_s:.0f} s" if r.cell_wall_s else "-"}


def arch_facets(views: list[figs.CellView], data: dict[str, CellData]) -> list[Facet]:
    """Per arch: the latency tails, the quantile table and the timelines."""
    out = []
    for arch in sorted({v.record.arch for v in views}):
        cells = [v for v in views if v.record.arch == arch]
        f = Facet(arch, arch, cells, rows=quantile_rows(cells, data))
        f.figures["tail"] = figs.tail_cdf(cells, arch)
        f.figures["timeline"] = figs.timeline(cells, arch)
        out.append(f)
    return out


def platform_facets(views: list[figs.CellView]) -> list[Facet]:
    """Per arch and simulated platform: latency vs energy with the frontier, and the residencies."""
    out = []
    for arch in sorted({v.record.arch for v in views}):
        groups: dict[str, tuple[str, list[figs.CellView]]] = {}
        for v in views:
            if v.record.arch == arch:
                key, label = _platform(v)
                groups.setdefault(key, (label, []))[1].append(v)
        titles = [label for label, _ in groups.values()]
        for n, (label, cells) in enumerate(groups.values()):
            title = f"{arch}, {label}" + (f" #{n + 1}" if titles.count(label) > 1 else "")
            f = Facet(f"{arch}-{n}", title, cells)
            metered = [c for c in cells if c.record.platform is not None]
            energy = [c for c in metered if c.record.platform.agent_energy_per_step_by_repeat_uj]
            f.notes += [f"{c.label}: not metered (no platform summary in its record)" for c in cells
                        if c.record.platform is None]
            f.notes += [f"{c.label}: not on the latency-energy plot (no agent-CPU energy in its record)"
                        for c in metered if not c.record.platform.agent_energy_per_step_by_repeat_uj]
            if energy:
                f.figures["pareto"] = figs.pareto(_unambiguous(energy), title, f.key)
                f.rows = energy_rows(energy)
            if metered:
                f.figures["residency"] = figs.residency(metered, title, f.key)
            out.append(f)
    return out


def meter_span(meters: set[str]) -> str:
    """What the energy and residency figures cover, in the page's words (records.PlatformSummary.meter)."""
    steps = "the measured steps: the loop reads the meter as the first one begins and the last one ends"
    whole = "whole repeats: warm-up, the loop's start and exit and the snapshots counted"
    if meters == {"steps"}:
        return steps
    if meters == {"repeat"}:
        return whole
    return f"mixed: where a cell's record says meter steps, {steps}; where it says repeat, {whole}"


def build(runs: Sequence[RunData]) -> str:
    """The page, as one HTML string."""
    names = _run_names(runs)
    several = len(runs) > 1
    pairs = _views(runs, names)
    views = [v for _, v in pairs]
    left_out = [{"run": name, "cell": cell, "why": why} for name, run in zip(names, runs, strict=True)
                for cell, why in sorted(compare.left_out(run).items())]
    arches = arch_facets(views, {v.label: c for c, v in pairs})
    provenance = [provenance_row(name, _label(name, c, several), c) for name, run in zip(names, runs, strict=True)
                  for c in sorted(run.ok + run.failed, key=lambda c: c.id)]
    repeats = sorted({r["repeats"] for f in arches for r in f.rows})
    meters = {v.record.platform.meter for v in views if v.record.platform is not None}
    return _ENV.get_template(TEMPLATE).render(
        runs=[{"name": n, "experiment": r.experiment, "run_id": r.index.run_id if r.index else "-",
               "ok": len(r.ok), "failed": len(r.failed), "problems": len(r.problems),
               "complete": r.index.complete if r.index else False} for n, r in zip(names, runs, strict=True)],
        arches=arches, platforms=platform_facets(views), left_out=left_out, provenance=provenance,
        quantiles=[f"p{q:g}" for q in QUANTILES], metrics=METRICS, resamples=compare.RESAMPLES,
        repeats=", ".join(str(r) for r in repeats) or "-", meter_span=meter_span(meters),
        min_steps=min((r["steps"] for f in arches for r in f.rows), default=0))


def write_html_report(runs: Sequence[RunData], out: Path) -> Path:
    atomic_write_text(out, build(runs))
    return out
