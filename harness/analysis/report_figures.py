"""The HTML report's figures: matplotlib drawn as inline SVG, one function a figure.

Each figure is one facet: an arch (x86_64 and arm64 step times differ by construction) or, where
energy is drawn, an arch and its simulated platform (the energies and the bound are the platform's).
No figure fetches anything: the SVG is stripped of its XML prologue and namespace URIs, and its ids
are salted per figure so that several figures can share one page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402

from harness.analysis.efficiency import frontier_curve, record_model  # noqa: E402
from harness.records import CellResult  # noqa: E402

WIDTH_IN = 13.0                 # a figure spans the page (CSS scales it to the column)
TIMELINE_POINTS = 1500          # per repeat: more are drawn as a min/max envelope
TAIL_TICKS = ((1.0, "1"), (0.5, "0.5 (p50)"), (0.1, "0.1 (p90)"), (0.01, "0.01 (p99)"), (0.001, "0.001 (p99.9)"))
RC = {"font.size": 10, "axes.titlesize": 10, "legend.fontsize": 8, "svg.fonttype": "path",
      "text.parse_math": False}    # a cell label is text, never TeX


@dataclass(frozen=True, eq=False)
class CellView:
    """One ok cell as the figures see it."""

    label: str                      # unique in the report (run/cell where several runs)
    run: str
    short: str                      # what a point is labelled with: the variant (and the run where that is ambiguous)
    color: str
    record: CellResult
    steps: dict[str, np.ndarray]    # steps.csv columns (us)
    dashes: str = "-"               # past 20 cells in a facet colours repeat, line styles tell them apart


def palette(n: int) -> list[tuple[str, str]]:
    """(colour, line style) for n lines: tab10 up to 10, tab20 up to 20, then tab20 again dashed."""
    if n <= 10:
        return [(f"C{i}", "-") for i in range(n)]
    cmap = plt.get_cmap("tab20")
    styles = ("-", "--", ":", "-.")
    return [(matplotlib.colors.to_hex(cmap(i % 20)), styles[(i // 20) % len(styles)]) for i in range(n)]


def svg(fig: plt.Figure) -> str:
    """The figure as an <svg> element for an HTML page: no prologue, no comments, no namespace URIs."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)


def _style(name: str):
    """The report's style, and ids salted by the figure's name (the page holds many SVGs)."""
    return plt.rc_context({**RC, "svg.hashsalt": name})


def _figure(height: float, ncols: int = 1, nrows: int = 1, **kw):
    return plt.subplots(nrows, ncols, figsize=(WIDTH_IN, height), squeeze=False, layout="constrained", **kw)


def tail_cdf(cells: Sequence[CellView], arch: str) -> str:
    """Step and wake latency as 1 - F on a log axis: the body at the top, p99 and p99.9 readable at
    the bottom; one line per cell."""
    with _style(f"tail-{arch}"):
        fig, axes = _figure(5.2, ncols=2)
        nmax = max(len(c.steps["step_us"]) for c in cells)
        for ax, col, what in ((axes[0][0], "step_us", "step latency (signal -> step done)"),
                              (axes[0][1], "wake_us", "wake latency (signal -> running)")):
            for c in cells:
                x = np.sort(np.maximum(np.asarray(c.steps[col], dtype=float), 1e-3))
                n = len(x)
                ax.step(x, (n - np.arange(n)) / n, where="post", color=c.color, linestyle=c.dashes, linewidth=1.3,
                        label=c.label)
            _log_latency_axis(ax, [np.asarray(c.steps[col], dtype=float) for c in cells])
            ax.set_yscale("log")
            ax.set_ylim(min(1e-3, 1 / nmax) * 0.6, 1.3)
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([v for v, _ in TAIL_TICKS]))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([t for _, t in TAIL_TICKS]))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            for v, _ in TAIL_TICKS[1:]:
                ax.axhline(v, color="0.6", linewidth=0.6, linestyle=":")
            ax.set_xlabel(f"{what} [us]")
            ax.set_ylabel("fraction of steps at least this slow")
            ax.set_title(f"{arch}: {what}")
            ax.grid(True, axis="x", which="major", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
        return svg(fig)


def _log_latency_axis(ax, data: list[np.ndarray]) -> None:
    """A log latency axis labelled in plain numbers at 1-2-5 steps (1-1.5-2-3-5-7 within a decade or
    so: no 4, whose label ran into 3's and 5's from 4 digits on), so the body and the tail of each cell
    stay apart; a span under 3x stays linear."""
    vals = np.concatenate([d[d > 0] for d in data if len(d)]) if data else np.array([])
    if not len(vals) or vals.max() / vals.min() < 3:
        return
    decades = np.log10(vals.max() / vals.min())
    subs = ((1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1.3 else (1.0, 2.0, 5.0) if decades <= 2.6 else (1.0,))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    """mean, and its distance to the smallest and the largest of the repeats (the error bar)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    return m, m - float(v.min()), float(v.max()) - m


def repeat_means(c: CellView, col: str = "step_us") -> list[float]:
    """Each repeat's mean of a steps.csv column."""
    rep = np.asarray(c.steps["repeat"])
    vals = np.asarray(c.steps[col], dtype=float)
    return [float(vals[rep == r].mean()) for r in np.unique(rep)]


def _ink(color: str) -> tuple[float, float, float]:
    """A line colour dark enough for text on white (tab20's light halves are not)."""
    r, g, b = matplotlib.colors.to_rgb(color)
    k = min(1.0, 0.55 / max(0.299 * r + 0.587 * g + 0.114 * b, 1e-6))
    return (r * k, g * k, b * k)


def _place_labels(ax, fig, anchors: list[tuple[float, float, str, str]]) -> None:
    """Point labels that overlap no other label, no point and not the legend, inside the axes: each
    tries offsets right of its point, then left, nearest first; crowded all round, the first one."""
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend else []
    for x, y, _, _ in anchors:
        px, py = ax.transData.transform((x, y))
        taken.append(matplotlib.transforms.Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    steps = [0] + [d for k in range(1, 9) for d in (-13 * k, 13 * k)]
    offsets = [(side, dy) for side in (9, -9) for dy in steps]

    def label(anchor: tuple[float, float, str, str], dx: float, dy: float):
        x, y, text, color = anchor
        t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color=color,
                        ha="left" if dx > 0 else "right", va="center", annotation_clip=False)
        t.set_in_layout(False)
        return t

    for anchor in sorted(anchors, key=lambda a: -a[1]):
        for dx, dy in offsets:
            t = label(anchor, dx, dy)
            box = t.get_window_extent(renderer)
            if (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
                    and not any(box.overlaps(b) for b in taken)):
                taken.append(box)
                break
            t.remove()
        else:
            taken.append(label(anchor, *offsets[0]).get_window_extent(renderer))


def pareto(cells: Sequence[CellView], title: str, name: str) -> str:
    """Mean step latency vs agent-CPU energy per step, one point per cell (error bars: the range of
    its repeats), with each cell's frontier bound: a curve over latency from its platform's power
    model, and the bound at its own latency marked on it."""
    with _style(f"pareto-{name}"):
        fig, axes = _figure(6.0)
        ax = axes[0][0]
        xs = [np.mean(repeat_means(c)) for c in cells]
        lo, hi = min(xs) * 0.85, max(xs) * 1.12
        lats = np.geomspace(max(lo, 1e-3), hi, 120)
        anchors = []
        drew_curve = drew_point = False
        for c in cells:
            plat = c.record.platform
            x, xm, xp = _spread(repeat_means(c))
            y, ym, yp = _spread(plat.agent_energy_per_step_by_repeat_uj)
            ax.errorbar([x], [y], xerr=[[xm], [xp]], yerr=[[ym], [yp]], fmt="o", color=c.color, markersize=7,
                        capsize=3, elinewidth=1.2, zorder=3)
            f = plat.frontier
            if f is None:
                anchors.append((x, y, f"{c.short} (no bound)", _ink(c.color)))
                continue
            try:
                curve = np.array([np.nan if e is None else e for e in frontier_curve(record_model(c.record.spec),
                                                                                    f, lats)], dtype=float)
                ax.plot(lats, curve, color=c.color, linewidth=1.0, linestyle="--", alpha=0.8, zorder=2)
                drew_curve = True
            except (KeyError, TypeError, ValueError):
                drew_point = True    # no model to draw the curve from: the bound points are joined below
            ax.plot([f.latency_us], [f.bound_uj], marker="D", markersize=5, markerfacecolor="white",
                    markeredgecolor=c.color, linestyle="none", zorder=3)
            anchors.append((x, y, f"{c.short}  eta {f.eta:.3f}", _ink(c.color)))
        if drew_point:
            pts = sorted((c.record.platform.frontier.latency_us, c.record.platform.frontier.bound_uj)
                         for c in cells if c.record.platform.frontier)
            ax.plot(*zip(*pts, strict=True), color="0.4", linewidth=1.0, linestyle=":", zorder=1)
        ax.set_xlim(lo, hi)
        _energy_axis(ax, [e for c in cells for e in c.record.platform.agent_energy_per_step_by_repeat_uj]
                     + [c.record.platform.frontier.bound_uj for c in cells if c.record.platform.frontier])
        ax.set_xlabel("mean step latency [us]  (error bars: range of the repeats)")
        ax.set_ylabel("agent CPU energy per step [uJ]")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        legend = [plt.Line2D([], [], marker="o", color="0.3", linestyle="none", label="measured (mean of repeats)"),
                  plt.Line2D([], [], marker="D", markerfacecolor="white", markeredgecolor="0.3", linestyle="none",
                             label="frontier bound at the cell's latency")]
        if drew_curve:
            legend.append(plt.Line2D([], [], color="0.3", linestyle="--", label="the cell's bound over latency"))
        if drew_point:
            legend.append(plt.Line2D([], [], color="0.4", linestyle=":", label="bound points joined"))
        ax.legend(handles=legend, loc="upper right", fontsize=8, framealpha=0.9)
        fig.canvas.draw()
        _place_labels(ax, fig, anchors)
        return svg(fig)


def _energy_axis(ax, energies: list[float]) -> None:
    """Linear from 0 while the energies are within 4x of each other; beyond, log, where the gap between
    a point and its bound (1 / eta) reads the same at every height."""
    lo, hi = min(energies), max(energies)
    if lo > 0 and hi / lo > 4:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.25, hi * 1.25)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.set_ylim(0, hi * 1.1)


def _khz(k: str) -> float:
    try:
        return float(k)
    except ValueError:
        return float("inf")


def residency(cells: Sequence[CellView], title: str, name: str) -> str:
    """Time at each OPP (of all time the policies were metered) and in each idle state (of all CPU
    time), stacked per cell; what is in no idle state is the grey remainder."""
    y = np.arange(len(cells))
    opps = sorted({k for c in cells for k in c.record.platform.freq_residency}, key=_khz)
    states = list(dict.fromkeys(s for c in cells for s in c.record.platform.idle_residency))
    rows = max(len(cells), 3)       # room for the legend beside the bars
    with _style(f"residency-{name}"):
        fig, axes = _figure(1.4 + 0.75 * rows, nrows=2, sharex=True)
        fax, iax = axes[0][0], axes[1][0]
        left = np.zeros(len(cells))
        for i, k in enumerate(opps):
            w = np.array([c.record.platform.freq_residency.get(k, 0.0) for c in cells])
            mhz = f"{_khz(k) / 1000:g} MHz" if _khz(k) != float("inf") else k
            fax.barh(y, w, left=left, color=plt.get_cmap("viridis")(i / max(len(opps) - 1, 1)), label=mhz, height=0.7)
            left += w
        left = np.zeros(len(cells))
        for i, s in enumerate(states):
            w = np.array([c.record.platform.idle_residency.get(s, 0.0) for c in cells])
            iax.barh(y, w, left=left, color=plt.get_cmap("YlGnBu")(0.12 + 0.83 * i / max(len(states) - 1, 1)), label=s,
                     height=0.7)
            left += w
        iax.barh(y, np.clip(1 - left, 0, None), left=left, color="0.85", label="in no idle state", height=0.7)
        for ax, what in ((fax, "frequency residency (share of time at each OPP)"),
                         (iax, "idle-state residency (share of CPU time in each state)")):
            ax.set_yticks(y, [c.label for c in cells])
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
            ax.tick_params(axis="x", labelbottom=True)
            ax.set_title(f"{title}: {what}", loc="left")
            n = len(ax.get_legend_handles_labels()[1])
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if n <= 2 * rows else 2, frameon=False,
                      fontsize=8)
        return svg(fig)


def _envelope(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Bins of a long series as (x, min, max), so that spikes survive the downsampling."""
    if len(x) <= points:
        return None
    bins = np.array_split(np.arange(len(x)), points // 2)
    return (np.array([x[b].mean() for b in bins]), np.array([y[b].min() for b in bins]),
            np.array([y[b].max() for b in bins]))


def timeline(cells: Sequence[CellView], arch: str) -> str:
    """Step latency against step index, a panel per cell and repeat (a row shares its y axis), so a
    governor that settles late, or one repeat unlike the others, shows."""
    reps = [np.unique(np.asarray(c.steps["repeat"])) for c in cells]
    ncols = max(len(r) for r in reps)
    with _style(f"timeline-{arch}"):
        fig, axes = _figure(0.5 + 1.35 * len(cells), ncols=ncols, nrows=len(cells), sharex=True)
        for row, c, rs in zip(axes, cells, reps, strict=True):
            rep = np.asarray(c.steps["repeat"])
            lims = np.asarray(c.steps["step_us"], dtype=float)
            lo, hi = float(lims.min()), float(lims.max())
            pad = (hi - lo) * 0.08 or hi * 0.01 or 1.0
            for j, ax in enumerate(row):
                if j >= len(rs):
                    ax.set_visible(False)
                    continue
                m = rep == rs[j]
                x = np.asarray(c.steps["step"], dtype=float)[m]
                yv = lims[m]
                env = _envelope(x, yv, TIMELINE_POINTS)
                if env is None:
                    ax.plot(x, yv, color=c.color, linewidth=0.8)
                else:
                    ax.fill_between(env[0], env[1], env[2], color=c.color, linewidth=0)
                ax.set_ylim(lo - pad, hi + pad)
                ax.set_title(f"{c.label}, repeat {int(rs[j])}" if j == 0 else f"repeat {int(rs[j])}", loc="left",
                             fontsize=9)
                ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
                ax.grid(True, alpha=0.3)
                if j == 0:
                    ax.set_ylabel("step [us]")
        for ax in axes[-1]:
            ax.set_xlabel("step index")
        return svg(fig)
