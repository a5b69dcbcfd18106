"""A probe's parsed records as CSV. Fields come from the guest (thread names, paths, function
names), so they are quoted by the csv module: a comma or a newline in one cannot shift columns."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable


def _cell(v) -> object:
    if v is None:
        return ""
    return int(v) if isinstance(v, bool) else v


def csv_text(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(header))
    w.writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue()
