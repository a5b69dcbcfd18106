"""Every measured step of one or more runs as one tidy table: a row per step, a column per variable.

steps.csv is per cell and knows nothing of the cell; a reader who wants "p99 by variant and
wait.us across arches" would have to join it with each result.json. Here the join is done once:
`run, cell, arch, variant`, one column per matrix axis (named by its dotted key), then steps.csv's
own columns (`repeat, agent, step, wait_us, wake_us, step_us, compute_us, phases_us, cpu`; times
in us). Only ok cells with usable steps contribute (`runs.load_run` names the others).

Written as CSV (csv module, minimal quoting: an axis value with a comma or a quote round-trips) and
as Parquet through pyarrow, with typed columns.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import records
from harness.analysis.runs import RunData
from harness.analysis.steps import PARSED_HEADER, PARSED_INT_COLUMNS
from harness.kernel.cache import atomic_write_text

KEY_COLUMNS = ("run", "cell", "arch", "variant")
STEP_COLUMNS = tuple(PARSED_HEADER.split(","))
NO_PYARROW = "pyarrow is not installed (pip install pyarrow, or bash scripts/setup.sh): Parquet not written"


@dataclass
class TidyTable:
    """Columns in order; `types` maps each to string, int64, float64 or bool. None is a missing value
    (an axis a cell does not have)."""

    columns: dict[str, list]
    types: dict[str, str]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))


def _axis_type(values: list[Any]) -> str:
    """One type per axis column, over every cell: a mix of ints and floats is float, anything
    else mixed (or a list/mapping value) is a string."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    return "string"


def _as(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "string":
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return float(v) if kind == "float64" else v


def tidy_table(runs: list[RunData]) -> TidyTable:
    cells = [(run, c) for run in runs for c in sorted(run.ok, key=lambda c: c.id)]
    axes = sorted({k for _, c in cells for k in c.record.axes})
    clash = set(axes) & set(KEY_COLUMNS + STEP_COLUMNS)
    if clash:   # the loader only allows cell fields as axes, so this is a record from elsewhere
        raise records.RecordError(f"matrix axis {sorted(clash)[0]!r} has the name of a step column")
    types = {k: "string" for k in KEY_COLUMNS}
    types.update({a: _axis_type([c.record.axes.get(a) for _, c in cells]) for a in axes})
    types.update({k: "int64" if k in PARSED_INT_COLUMNS else "float64" for k in STEP_COLUMNS})
    cols: dict[str, list] = {k: [] for k in types}
    for run, c in cells:
        st = c.steps()
        n = len(st["step"])
        r = c.record
        for k, v in (("run", run.dir.name), ("cell", r.cell), ("arch", r.arch), ("variant", r.variant)):
            cols[k] += [v] * n
        for a in axes:
            cols[a] += [_as(types[a], r.axes.get(a))] * n
        for k in STEP_COLUMNS:
            vals = st[k].astype(np.int64) if k in PARSED_INT_COLUMNS else st[k]
            cols[k] += vals.tolist()
    return TidyTable(cols, types)


def _csv_field(kind: str, v: Any) -> Any:
    if v is None:
        return ""
    if kind == "bool":
        return "true" if v else "false"
    return v


def write_csv(table: TidyTable, path: Path) -> Path:
    """QUOTE_MINIMAL: a field with a comma, a quote or a newline is quoted, the rest is plain."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    names = list(table.columns)
    w.writerow(names)
    kinds = [table.types[n] for n in names]
    for row in zip(*(table.columns[n] for n in names), strict=True):
        w.writerow([_csv_field(k, v) for k, v in zip(kinds, row, strict=True)])
    atomic_write_text(path, buf.getvalue())
    return path


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(table: TidyTable, path: Path) -> Path:
    """Typed columns; the file's metadata names the harness schema version and the time unit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pa_types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    t = pa.table({n: pa.array(v, type=pa_types[table.types[n]]) for n, v in table.columns.items()})
    t = t.replace_schema_metadata({"harness.schema_version": str(records.SCHEMA_VERSION),
                                   "harness.time_unit": "us", "harness.columns": ",".join(table.columns)})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(t, tmp)
    tmp.replace(path)
    return path


def write(table: TidyTable, path: Path) -> Path:
    """By the file's suffix: .csv or .parquet."""
    if path.suffix.lower() == ".csv":
        return write_csv(table, path)
    return write_parquet(table, path)
