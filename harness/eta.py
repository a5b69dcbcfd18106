"""How long cells will take, from the wall times earlier cells took (`cell_wall_s` of ok records).

A cell's own earlier record is the best guess (same workload, same machine); failing that, the
mean of earlier cells of the same arch (an arm64 cell under TCG is several times an x86_64 one),
then of all earlier cells. Every estimate says where it came from, and there is none without a
record: the harness does not guess from the spec. Kernel builds are not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import records
from harness.records import CellResult, RunIndex


@dataclass(frozen=True)
class Wall:
    arch: str
    seconds: float
    origin: str       # the run directory's name


@dataclass(frozen=True)
class CellEstimate:
    cell: str
    seconds: float | None
    source: str       # "its earlier record", "mean of 3 x86_64 cells", "no earlier record"


def walls(run_dir: Path) -> dict[str, Wall]:
    """cell -> wall time of its ok record in `run_dir` (cells without one are absent)."""
    out: dict[str, Wall] = {}
    if not run_dir.is_dir() or run_dir.is_symlink():
        return out
    for d in sorted(run_dir.iterdir()):
        if d.is_symlink() or not d.is_dir():
            continue
        try:
            rec = records.read(d / records.CELL_RESULT, CellResult)
        except records.RecordError:
            continue
        if rec.status == "ok" and rec.cell_wall_s is not None:
            out[rec.cell] = Wall(rec.arch, rec.cell_wall_s, run_dir.name)
    return out


def history(run_dir: Path, experiment: str) -> tuple[dict[str, Wall], Path | None]:
    """Wall times to estimate from: the run directory's own records, else those of the most recent
    other run of the same experiment next to it (an edited experiment file gets a new run id).
    Returns them and the directory they came from (None: nothing found)."""
    own = walls(run_dir)
    if own:
        return own, run_dir
    root = run_dir.parent
    candidates = []
    if root.is_dir():
        for d in root.iterdir():
            if d == run_dir or d.is_symlink() or not d.is_dir():
                continue
            try:
                idx = records.read(d / records.RUN_INDEX, RunIndex)
            except records.RecordError:
                continue
            if idx.experiment == experiment and idx.invocations:
                candidates.append((idx.invocations[-1].started, d))
    for _, d in sorted(candidates, reverse=True):
        if w := walls(d):
            return w, d
    return {}, None


def estimate(cells: list[tuple[str, str]], known: dict[str, Wall]) -> list[CellEstimate]:
    """cells: (cell id, arch) still to run."""
    by_arch: dict[str, list[float]] = {}
    for w in known.values():
        by_arch.setdefault(w.arch, []).append(w.seconds)
    every = [s for v in by_arch.values() for s in v]
    out = []
    for cell, arch in cells:
        if cell in known:
            out.append(CellEstimate(cell, known[cell].seconds, "its earlier record"))
        elif by_arch.get(arch):
            v = by_arch[arch]
            out.append(CellEstimate(cell, sum(v) / len(v), f"mean of {len(v)} {arch} cell{'s' * (len(v) > 1)}"))
        elif every:
            n = len(every)
            out.append(CellEstimate(cell, sum(every) / n, f"mean of {n} cell{'s' * (n > 1)} of other arches"))
        else:
            out.append(CellEstimate(cell, None, "no earlier record"))
    return out


def total(ests: list[CellEstimate]) -> tuple[float, int]:
    """Seconds over the cells that have an estimate, and how many have none."""
    return sum(e.seconds for e in ests if e.seconds is not None), sum(e.seconds is None for e in ests)


def describe(ests: list[CellEstimate]) -> str:
    """'12m30s for 3 cells (its earlier record: 2; mean of 3 x86_64 cells: 1)'."""
    if not ests:
        return "nothing to run"
    secs, unknown = total(ests)
    if unknown == len(ests):
        return "no estimate (no earlier record)"
    sources: dict[str, int] = {}
    for e in ests:
        if e.seconds is not None:
            sources[e.source] = sources.get(e.source, 0) + 1
    parts = [f"{src}: {n}" for src, n in sources.items()]
    n = len(ests) - unknown
    text = f"{duration(secs)} for {n} cell{'s' * (n > 1)} ({'; '.join(parts)})"
    return text + (f", plus {unknown} cell{'s' * (unknown > 1)} with no estimate" if unknown else "")


def duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")
