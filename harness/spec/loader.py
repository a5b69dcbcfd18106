"""Turn an experiment file into validated cells, or into errors that point into the file.

Validation happens in three passes, each reporting every problem it finds with file, line,
column and field: the schema of the whole file; references to things outside it (config
fragments, patch series, kernel source paths); then every cell of the matrix, so that an
override that does not fit its field is reported at the matrix or variant line that set it.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness import paths
from harness.errors import SpecError, SpecIssue
from harness.spec.model import CellSpec, Experiment
from harness.spec.yamlsrc import SourceMap, dotted, load_yaml

# Keys of an experiment that are not part of a cell.
_EXPERIMENT_ONLY = {"name", "description", "repeats", "matrix", "variants", "arch"}


@dataclass(frozen=True)
class Cell:
    """One point of the experiment matrix, fully resolved."""

    id: str
    variant: str
    axes: dict[str, Any]
    spec: CellSpec


@dataclass
class LoadedExperiment:
    path: Path
    experiment: Experiment
    cells: list[Cell] = field(default_factory=list)


def _reason(err: dict[str, Any]) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required field is missing"
    if "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
        return f"{msg} (got {err['input']!r})"
    return msg.removeprefix("Value error, ")


def _schema_issues(exc: ValidationError, locate) -> list[SpecIssue]:
    return [locate(tuple(e["loc"]), _reason(e)) for e in exc.errors()]


def _check_references(spec: CellSpec, locate, base_dir: Path) -> list[SpecIssue]:
    """Things the schema cannot see: files a cell names must exist (checked per cell, so a value
    set by a variant or matrix axis is checked too and reported at the line that set it)."""
    issues = []
    for i, frag in enumerate(spec.kernel.fragments):
        if not (paths.CONFIGS_DIR / f"{frag}.config").is_file():
            issues.append(locate(("kernel", "fragments", i), f"no config fragment kernel/configs/{frag}.config"))
    for i, series in enumerate(spec.kernel.series):
        if not (paths.PATCHES_DIR / series).is_dir():
            issues.append(locate(("kernel", "series", i), f"no patch series kernel/patches/{series}/"))
    if spec.kernel.source != "debian":
        src = Path(spec.kernel.source).expanduser()
        src = src if src.is_absolute() else base_dir / src
        if not src.exists():
            issues.append(locate(("kernel", "source"), f"kernel source {src} does not exist"))
    if spec.workload.wait.file:
        wf = Path(spec.workload.wait.file)
        if not (wf if wf.is_absolute() else base_dir / wf).is_file():
            issues.append(locate(("workload", "wait", "file"), f"wait-time file {wf} does not exist"))
    return issues


def _set_dotted(data: dict, path: tuple[str, ...], value: Any) -> str | None:
    """Set data[p0][p1]... = value; returns a reason if the path cannot exist."""
    cur = data
    for part in path[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            return f"'{part}' is not a mapping, so '{'.'.join(path)}' cannot be set"
        cur = nxt
    cur[path[-1]] = copy.deepcopy(value)
    return None


def _fmt(value: Any) -> str:
    """A matrix value as part of a cell id, which is also a directory name and reaches virtme-ng's
    `--rwdir=GUEST=HOST` (so no '=' or ',')."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))


def _expand(exp: Experiment, data: dict, smap: SourceMap, base_dir: Path) -> tuple[list[Cell], list[SpecIssue]]:
    base = {k: v for k, v in data.items() if k not in _EXPERIMENT_ONLY}
    issues: list[SpecIssue] = []
    cell_fields = set(CellSpec.model_fields)

    axes: list[tuple[str, list[tuple[Any, tuple]]]] = []
    for key, values in exp.matrix.items():
        parts = tuple(key.split("."))
        if key == "arch":
            issues.append(smap.issue(("matrix", key), "use the top-level 'arch' list for architectures"))
        elif parts[0] not in cell_fields:
            issues.append(smap.issue(("matrix", key), f"'{parts[0]}' is not a cell field "
                                     f"(one of: {', '.join(sorted(cell_fields - {'arch'}))})"))
        axes.append((key, [(v, ("matrix", key, i)) for i, v in enumerate(values)]))
    variants = [(v.name, [(k, val, ("variants", vi, "set", k)) for k, val in v.set.items()])
                for vi, v in enumerate(exp.variants)] or [("base", [])]
    for _, sets in variants:
        for k, _, origin in sets:
            if k.split(".")[0] not in cell_fields or k == "arch":
                issues.append(smap.issue(origin, f"'{k.split('.')[0]}' is not a cell field that a variant can set"))
    if issues:
        return [], issues

    cells: list[Cell] = []
    seen_issue: set[SpecIssue] = set()
    for arch in exp.arch:
        for vname, sets in variants:
            for combo in itertools.product(*[vals for _, vals in axes]) if axes else [()]:
                raw = copy.deepcopy(base)
                raw["arch"] = arch
                overrides: list[tuple[tuple[str, ...], tuple]] = []
                for key, value, origin in sets:
                    overrides.append((tuple(key.split(".")), origin))
                    if (why := _set_dotted(raw, tuple(key.split(".")), value)):
                        seen_issue.add(smap.issue(origin, why))
                axis_values = {}
                for (key, _), (value, origin) in zip(axes, combo, strict=True):
                    overrides.append((tuple(key.split(".")), origin))
                    axis_values[key] = value
                    if (why := _set_dotted(raw, tuple(key.split(".")), value)):
                        seen_issue.add(smap.issue(origin, why))

                def locate(loc: tuple, reason: str, overrides=overrides) -> SpecIssue:
                    for opath, origin in reversed(overrides):
                        if loc[: len(opath)] == opath:
                            line, col = smap.locate(origin)
                            return SpecIssue(smap.file, line, col, dotted(loc), reason)
                    return smap.issue(loc, reason)

                try:
                    spec = CellSpec.model_validate(raw)
                except ValidationError as e:
                    seen_issue.update(_schema_issues(e, locate))
                    continue
                if refs := _check_references(spec, locate, base_dir):
                    seen_issue.update(refs)
                    continue
                parts = [arch, vname] + [f"{k.split('.')[-1]}_{_fmt(v)}" for k, v in axis_values.items()]
                cells.append(Cell(id="-".join(parts), variant=vname, axes=axis_values, spec=spec))
    issues.extend(sorted(seen_issue, key=lambda i: (i.line, i.column, i.field)))
    return cells, issues


def load_experiment(path: str | Path) -> LoadedExperiment:
    """Load, validate and expand an experiment file. Raises SpecError (exit code 2) on any problem."""
    path = Path(path)
    data, smap = load_yaml(path, display=str(path))
    if not isinstance(data, dict):
        raise SpecError([smap.issue((), "an experiment must be a mapping of keys to values")])
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as e:
        raise SpecError(_schema_issues(e, smap.issue)) from None
    cells, issues = _expand(exp, data, smap, path.resolve().parent)
    if issues:
        raise SpecError(issues)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise SpecError([smap.issue(("matrix",), "two cells resolve to the same id")])
    return LoadedExperiment(path=path, experiment=exp, cells=cells)
