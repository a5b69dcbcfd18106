"""A results directory, loaded from its records alone: what report and compare work from.

Nothing here builds, boots or reads the guest's share. A cell whose record is missing, truncated,
of another schema version or failed is excluded and named in `problems` / `failed`, so one bad
cell never stops an analysis of the others. Cells are selected by arch, variant and axes (the
record's fields), never by parsing their ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import records
from harness.analysis.steps import StepsFormatError, read_parsed_csv
from harness.errors import InputError
from harness.records import CellResult, RunIndex


@dataclass
class CellData:
    record: CellResult
    dir: Path
    _steps: dict[str, np.ndarray] | None = None

    @property
    def id(self) -> str:
        return self.record.cell

    def steps(self) -> dict[str, np.ndarray]:
        """steps.csv as float columns (us); StepsFormatError if it is unusable."""
        if self._steps is None:
            self._steps = read_parsed_csv(self.dir / records.CELL_STEPS)
        return self._steps

    def axes_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in self.record.axes.items()))


@dataclass
class RunData:
    dir: Path
    index: RunIndex | None
    ok: list[CellData] = field(default_factory=list)
    failed: list[CellData] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)   # cell (or "run.json") -> why it was left out

    @property
    def experiment(self) -> str:
        if self.index is not None:
            return self.index.experiment
        cells = self.ok + self.failed
        return cells[0].record.experiment if cells else self.dir.name

    def select(self, arch: str | None = None, variant: str | None = None,
               axes: dict[str, Any] | None = None) -> list[CellData]:
        """Ok cells matching every given field."""
        return [c for c in self.ok
                if (arch is None or c.record.arch == arch) and (variant is None or c.record.variant == variant)
                and all(c.record.axes.get(k) == v for k, v in (axes or {}).items())]

    def arches(self) -> list[str]:
        return sorted({c.record.arch for c in self.ok + self.failed})


def load_run(run_dir: Path) -> RunData:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    index: RunIndex | None = None
    problems: dict[str, str] = {}
    try:
        index = records.read(run_dir / records.RUN_INDEX, RunIndex)
    except records.RecordError as e:
        problems[records.RUN_INDEX] = str(e)
    # the index, and any cell directory with a record the index has not caught up with (a run
    # killed between the two writes)
    on_disk = [p.name for p in run_dir.iterdir()
               if p.is_dir() and not p.is_symlink() and (p / records.CELL_RESULT).exists()]
    names = sorted(set(index.cells if index else ()) | set(on_disk))
    if index is None and not names:
        raise InputError(f"{run_dir}: not a run directory (no {records.RUN_INDEX}, no cell records)")
    run = RunData(run_dir, index, problems=problems)
    for name in names:
        d = run_dir / name
        if "/" in name or name in (".", "..") or d.is_symlink():
            problems[name] = "not a cell directory"
            continue
        try:
            rec = records.read(d / records.CELL_RESULT, CellResult)
        except records.RecordError as e:
            problems[name] = f"record unusable: {e}"
            continue
        cell = CellData(rec, d)
        if rec.status != "ok":
            run.failed.append(cell)
            continue
        try:
            cell.steps()
        except StepsFormatError as e:
            problems[name] = f"steps unusable: {e}"
            continue
        run.ok.append(cell)
    return run
