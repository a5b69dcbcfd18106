"""Turn an experiment file into validated cells, or into errors that point into the file.

Validation happens in passes, each reporting every problem it finds with file, line, column and
field: the file itself and its YAML (yamlsrc); the schema of the whole file; what the schema
cannot see of the experiment (repeated names, matrix and variant paths, the number of cells);
then every cell of the matrix (its schema, the files it names, the kernel it needs for what it
asks, the size of its loop, its id), so that an override that does not fit its field is reported
at the matrix or variant line that set it. Nothing is built, unpacked or written.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness import paths
from harness.errors import SpecError, SpecIssue
from harness.spec.model import (
    AGENT_PROBES,
    CELL_ID_MAX,
    MAX_CELLS,
    MAX_EXPANDED_VALUES,
    MAX_ISSUES_SHOWN,
    STEPS_TOTAL_MAX,
    WAIT_FILE_MAX_BYTES,
    CellSpec,
    Experiment,
)
from harness.spec.yamlsrc import SourceMap, dotted, file_kind, load_yaml

# Keys of an experiment that are not part of a cell.
_EXPERIMENT_ONLY = {"name", "description", "repeats", "matrix", "variants", "arch"}
# Tarballs the kernel source may be, with the bytes each starts with (tar's magic is at 257).
_TARBALLS = {".tar": (257, b"ustar"), ".tar.gz": (0, b"\x1f\x8b"), ".tgz": (0, b"\x1f\x8b"),
             ".tar.xz": (0, b"\xfd7zXZ\x00"), ".tar.zst": (0, b"\x28\xb5\x2f\xfd")}
# The series and fragment a booted kernel needs for the simulated cpufreq/cpuidle platform, which
# the platform knobs, their checks and the energy meter read (harness/guest/platform.py).
_SIM_PLATFORM = "sim-platform"
_AGENT_SERIES = "agent-latency"


@dataclass(frozen=True)
class Cell:
    """One point of the experiment matrix, fully resolved."""

    id: str
    variant: str
    axes: dict[str, Any]
    spec: CellSpec
    targets: tuple = ()      # harness.target.inventory.Target(s) of machine.target (a fleet: several)

    @property
    def deploys(self) -> bool:
        """A remote cell whose kernel the harness builds and boots on the target (kexec)."""
        return bool(self.targets) and all(t.entry.deploy != "none" for t in self.targets)

    @property
    def simulated(self) -> bool:
        """Its platform is the simulated one: a VM's, or a deployed kernel's that carries it."""
        k = self.spec.kernel
        return not self.targets or (self.deploys and _SIM_PLATFORM in k.series and _SIM_PLATFORM in k.fragments)


@dataclass
class LoadedExperiment:
    path: Path
    experiment: Experiment
    cells: list[Cell] = field(default_factory=list)


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reason(err: dict[str, Any]) -> str:
    msg, kind = err["msg"], err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    inp = err.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if inp is None:
            return "is empty (null): give it keys, or remove it"
        return f"should be a mapping of keys to values (got {_got(inp)})"
    if kind == "list_type" and inp is None:
        return "is empty (null): give it a list ([]), or remove it"
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.endswith("_type") and isinstance(inp, (dict, list)):
        return f"{msg} (got a {'mapping' if isinstance(inp, dict) else 'list'})"
    if "input" in err and not isinstance(inp, (dict, list)):
        hint = ", a string" if isinstance(inp, str) and kind in ("int_type", "float_type", "bool_type") else ""
        hint = ", a boolean" if isinstance(inp, bool) and kind in ("int_type", "float_type") else hint
        return f"{msg} (got {_got(inp)}{hint})"
    return msg


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _schema_issues(exc: ValidationError, locate, exists) -> list[SpecIssue]:
    out = []
    for e in exc.errors():
        loc, reason = tuple(e["loc"]), _reason(e)
        if loc and loc[-1] == "[key]":        # a bad mapping key: pydantic appends '[key]'
            loc, reason = loc[:-1], f"not a valid key: {reason}"
        elif e["type"] == "value_error" and isinstance(e.get("input"), dict):
            # A model's own check ("governor 'userspace' needs userspace_khz") comes at the model:
            # put it at the first field it names that the file gives.
            for word in _WORD.findall(reason):
                if exists(sub := loc + tuple(word.split("."))):
                    loc = sub
                    break
        out.append(locate(loc, reason))
    return sorted(out, key=lambda i: (i.line, i.column))


def _host_path(text: str, base_dir: Path) -> Path:
    p = Path(text)
    if text.startswith("~"):
        try:
            p = p.expanduser()
        except RuntimeError:
            pass
    return Path(os.path.normpath(p if p.is_absolute() else base_dir / p))


def _stat(p: Path) -> os.stat_result | str:
    try:
        return os.stat(p)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    except ValueError:
        return "has a NUL byte"


def _head(p: Path, n: int) -> bytes | None:
    """The first n bytes of a regular file, opened without blocking (None if unreadable)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, n) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _source_problem(source: str, base_dir: Path) -> str | None:
    """Why kernel.source cannot be built from, or None: 'debian', a kernel git tree, or a tarball."""
    if source == "debian":
        return None
    p = _host_path(source, base_dir)
    st = _stat(p)
    if isinstance(st, str):
        return f"kernel source {p} {st}"
    if stat.S_ISDIR(st.st_mode):
        missing = [n for n, test in (("Makefile", Path.is_file), ("Kconfig", Path.is_file),
                                     ("kernel/sched/", Path.is_dir)) if not test(p / n.rstrip("/"))]
        if missing:
            return f"kernel source {p} is not a kernel tree (no {', '.join(missing)})"
        if not (p / ".git").exists():
            return (f"kernel source {p} is a kernel tree but not a git repository (no .git): commit it, "
                    "or make a tarball")
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"kernel source {p} is {file_kind(st.st_mode)}, not a kernel tree or a tarball"
    suffix = next((s for s in sorted(_TARBALLS, key=len, reverse=True) if p.name.endswith(s)), None)
    if suffix is None:
        return f"kernel source {p} is a file but not a tarball (.tar, .tar.gz, .tar.xz or .tar.zst)"
    offset, magic = _TARBALLS[suffix]
    head = _head(p, 512)
    if head is None:
        return f"kernel source {p} cannot be read"
    if head[offset:offset + len(magic)] != magic:
        return f"kernel source {p} is named {suffix} but its contents are not"
    return None


def _wait_file_problem(text: str, base_dir: Path, what: str = "wait-time file") -> str | None:
    p = _host_path(text, base_dir)
    st = _stat(p)
    if isinstance(st, str):
        return f"{what} {p} {st}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {p} is {file_kind(st.st_mode)}, not a regular file"
    if st.st_size > WAIT_FILE_MAX_BYTES:
        return f"{what} {p} is {st.st_size} bytes, more than {WAIT_FILE_MAX_BYTES}"
    return None


def _check_cell(spec: CellSpec, repeats: int, locate, base_dir: Path) -> list[SpecIssue]:
    """What the schema cannot see, checked per cell, so that a value set by a variant or matrix
    axis is reported at the line that set it: the files it names exist and are what they should
    be, its kernel has what the cell asks of it, and its loop is bounded."""
    issues = []
    k, w = spec.kernel, spec.workload
    for i, frag in enumerate(k.fragments):
        if not (paths.CONFIGS_DIR / f"{frag}.config").is_file():
            issues.append(locate(("kernel", "fragments", i), f"no config fragment kernel/configs/{frag}.config"))
    for i, series in enumerate(k.series):
        if not (paths.PATCHES_DIR / series).is_dir():
            issues.append(locate(("kernel", "series", i), f"no patch series kernel/patches/{series}/"))
    if (why := _source_problem(k.source, base_dir)) is not None:
        issues.append(locate(("kernel", "source"), why))
    if w.wait.file and (why := _wait_file_problem(w.wait.file, base_dir)) is not None:
        issues.append(locate(("workload", "wait", "file"), why))
    if w.compute is not None and w.compute.file and \
            (why := _wait_file_problem(w.compute.file, base_dir, "compute file")) is not None:
        issues.append(locate(("workload", "compute", "file"), why))

    remote = spec.machine.target is not None
    if remote:
        if w.phases.disk_mb:
            issues.append(locate(("workload", "phases", "disk_mb"), "a scratch disk is a VM's virtio-blk device: not "
                                 "on a remote target"))
    # Every VM boots a guest whose platform knobs and energy meter are the simulated platform's.
    if remote:
        pass
    elif _SIM_PLATFORM not in k.series:
        issues.append(locate(("kernel", "series"), f"a booted kernel needs the '{_SIM_PLATFORM}' series: "
                             "the platform knobs, their checks and the energy meter are the simulated platform's"))
    if not remote and _SIM_PLATFORM not in k.fragments:
        issues.append(locate(("kernel", "fragments"), f"a booted kernel needs the '{_SIM_PLATFORM}' fragment "
                             "(CONFIG_SIM_CPUFREQ/CPUIDLE) for the simulated platform"))
    if k.agent_latency and _AGENT_SERIES not in k.series:
        issues.append(locate(("kernel", "agent_latency"), f"CONFIG_AGENT_LATENCY needs the '{_AGENT_SERIES}' "
                             "series in kernel.series"))
    if not k.agent_latency:
        for name in w.window_options_given()[:1]:
            issues.append(locate(("workload", name), "the agent latency window needs kernel.agent_latency: "
                                 "true (a stock kernel has no window)"))
        for name in (n for n in spec.probes if n in AGENT_PROBES):
            issues.append(locate(("probes", spec.probes.index(name)),
                                 f"probe {name} traces the window's events: it needs kernel.agent_latency: true"))

    plat = spec.platform
    if len(plat.disabled_on(spec.arch)) == len(plat.cstates_on(spec.arch)):
        knob = next(n for n in ("only_cstate", "disabled_cstates", "max_cstate") if getattr(plat, n) not in (None, []))
        issues.append(locate(("platform", knob), f"with the other C-state knobs it disables every idle state "
                             f"{spec.arch} has ({', '.join(plat.cstates_on(spec.arch))}): leave one enabled"))

    total = (w.steps + w.warmup) * w.agents * repeats
    if total > STEPS_TOTAL_MAX:
        issues.append(locate(("workload", "steps"), f"(steps {w.steps} + warmup {w.warmup}) x agents {w.agents} x "
                             f"repeats {repeats} = {total} loop steps, more than {STEPS_TOTAL_MAX} per cell"))
    return issues


def _resolve_target(value: str, arch: str, base_dir: Path) -> tuple | str | SpecError:
    """machine.target's targets, or why not: a reason for the target's line, or the inventory's own
    located errors."""
    from harness.target import inventory
    try:
        return tuple(inventory.resolve(value, arch, base_dir))
    except inventory.TargetError as e:
        return str(e)
    except SpecError as e:
        return e


def _deploy_issues(spec: CellSpec, targets: tuple, locate) -> list:
    """What a remote cell asks of its targets that they do not do: a kernel command line needs a
    target the harness deploys kernels to; virtual time needs a target that is a QEMU guest under
    -icount (the inventory's `clock`)."""
    m, issues = spec.machine, []
    deploys = all(t.entry.deploy != "none" for t in targets)
    if m.cmdline and not deploys:
        issues.append(locate(("machine", "cmdline"), "this target runs the kernel it has: a kernel command line "
                             "needs a target with `deploy: kexec` in the targets inventory"))
    clocks = {t.entry.clock for t in targets}
    if m.timing == "virtual" and clocks != {"virtual"}:
        issues.append(locate(("machine", "timing"), "virtual time is QEMU's: this target runs in real time (an "
                             "inventory entry says `clock: virtual` only for a QEMU guest under -icount)"))
    if m.timing == "realtime" and "virtual" in clocks:
        issues.append(locate(("machine", "timing"), "this target is a QEMU guest under -icount (`clock: virtual` "
                             "in the inventory): its clock is virtual, whatever the cell asks"))
    return issues


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _set_dotted(data: dict, path: tuple[str, ...], value: Any) -> str | None:
    """Set data[p0][p1]... = value, a mapping merging into a mapping; returns a reason if the path cannot exist."""
    cur = data
    for part in path[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            return f"'{part}' is not a mapping, so '{'.'.join(path)}' cannot be set"
        cur = nxt
    if isinstance(value, dict) and isinstance(cur.get(path[-1]), dict):
        _merge(cur[path[-1]], value)
    else:
        cur[path[-1]] = copy.deepcopy(value)
    return None


def _covers(value: Any, rest: tuple) -> int | None:
    """How much of `rest` (a path below an override) the override's value spells out, None if the
    value does not reach it (a key the override's mapping lacks came from the base, after merging)."""
    n = 0
    for part in rest:
        if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value, n = value[part], n + 1      # lists are replaced whole: an index is the override's
            continue
        if not isinstance(value, dict):
            return n
        if part not in value:
            return None
        value, n = value[part], n + 1
    return n


def _fmt(value: Any) -> str:
    """A matrix value as part of a cell id, which is also a directory name and reaches virtme-ng's
    `--rwdir=GUEST=HOST` (so no '=' or ',')."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))


def _experiment_issues(exp: Experiment, smap: SourceMap) -> list[SpecIssue]:
    """The experiment's own structure: repeated names, matrix and variant paths, the cell count."""
    issues: list[SpecIssue] = []
    for i, a in enumerate(exp.arch):
        if a in exp.arch[:i]:
            issues.append(smap.issue(("arch", i), f"arch lists {a} twice"))
    for i, v in enumerate(exp.variants):
        if any(v.name == u.name for u in exp.variants[:i]):
            first = next(j for j, u in enumerate(exp.variants) if u.name == v.name)
            issues.append(smap.issue(("variants", i, "name"),
                                     f"variant name '{v.name}' is taken (by variants[{first}])"))
        for ai, a in enumerate(v.arch or []):
            if a not in exp.arch:
                issues.append(smap.issue(("variants", i, "arch", ai), f"{a} is not one of the experiment's arches "
                                         f"({', '.join(exp.arch)})"))
            elif a in v.arch[:ai]:
                issues.append(smap.issue(("variants", i, "arch", ai), f"arch lists {a} twice"))
    for key, values in exp.matrix.items():
        for i, v in enumerate(values):
            if any(type(u) is type(v) and u == v for u in values[:i]):
                issues.append(smap.issue(("matrix", key, i), f"value {_got(v)} is listed twice"))
    cell_fields = set(CellSpec.model_fields)
    choices = ", ".join(sorted(cell_fields - {"arch"}))
    for key in exp.matrix:
        top = key.split(".")[0]
        if key == "arch":
            issues.append(smap.issue(("matrix", key), "use the top-level 'arch' list for architectures"))
        elif top not in cell_fields or top == "arch":
            issues.append(smap.issue(("matrix", key), f"'{top}' is not a cell field (one of: {choices})"))
    for vi, v in enumerate(exp.variants):
        for k in v.set:
            top = k.split(".")[0]
            if top not in cell_fields or top == "arch":
                issues.append(smap.issue(("variants", vi, "set", k), f"'{top}' is not a cell field that a variant "
                                         f"can set (one of: {choices})"))
    n = len(exp.arch) * max(1, len(exp.variants)) * math.prod(len(v) for v in exp.matrix.values())
    where = ("matrix",) if exp.matrix else ("variants",)
    if n > MAX_CELLS:
        issues.append(smap.issue(where, f"{n} cells (arch x variants x matrix values), more than {MAX_CELLS}"))
        return issues
    # Each cell is the base plus one variant's set plus one value per axis: the sum over cells.
    base = sum(_size(v) for k, v in exp.model_dump().items() if k not in _EXPERIMENT_ONLY)
    sets = [sum(_size(x) for x in v.set.values()) for v in exp.variants] or [0]
    m = n // len(exp.arch) // len(sets)                     # cells per arch and variant
    axes = sum(m // len(values) * sum(_size(x) for x in values) for values in exp.matrix.values())
    total = len(exp.arch) * (m * sum(base + s for s in sets) + len(sets) * axes)
    if total > MAX_EXPANDED_VALUES:
        issues.append(smap.issue(where, f"the cells hold {int(total)} values in all, more than "
                                 f"{MAX_EXPANDED_VALUES}: fewer cells, or smaller overrides"))
    return issues


def _size(x: Any) -> int:
    """Values in a piece of data (a mapping or a list counts itself and its contents)."""
    if isinstance(x, dict):
        return 1 + sum(_size(v) for v in x.values())
    if isinstance(x, list):
        return 1 + sum(_size(v) for v in x)
    return 1


def _expand(exp: Experiment, data: dict, smap: SourceMap, base_dir: Path) -> tuple[list[Cell], list[SpecIssue]]:
    base = {k: v for k, v in data.items() if k not in _EXPERIMENT_ONLY}
    axes = [(key, [(v, ("matrix", key, i)) for i, v in enumerate(values)])
            for key, values in (data.get("matrix") or {}).items()]
    variants = [(v["name"], ("variants", vi, "name"),
                 [(k, val, ("variants", vi, "set", k)) for k, val in (v.get("set") or {}).items()], v.get("arch"))
                for vi, v in enumerate(data.get("variants") or [])] or [("base", None, [], None)]

    cells: list[Cell] = []
    by_id: dict[str, dict[str, Any]] = {}
    seen_issue: set[SpecIssue] = set()
    resolved: dict[tuple[str, str], tuple | str | SpecError] = {}
    for arch in exp.arch:
        for vname, vorigin, sets, varches in variants:
            if varches is not None and arch not in varches:
                continue
            for combo in itertools.product(*[vals for _, vals in axes]) if axes else [()]:
                raw = copy.deepcopy(base)
                raw["arch"] = arch
                overrides: list[tuple[tuple[str, ...], Any, tuple]] = []
                settings = [(key, value, origin) for key, value, origin in sets]
                settings += [(key, value, origin) for (key, _), (value, origin) in zip(axes, combo, strict=True)]
                for key, value, origin in settings:
                    opath = tuple(key.split("."))
                    overrides.append((opath, value, origin))
                    if (why := _set_dotted(raw, opath, value)):
                        seen_issue.add(smap.issue(origin, why))

                def origin_of(loc: tuple, overrides=overrides) -> tuple | None:
                    """Where in the file the value at cell path `loc` was set: the override that set
                    it (or the structure around it), else None (the base's own position)."""
                    for opath, value, origin in reversed(overrides):
                        if loc[: len(opath)] == opath and (n := _covers(value, loc[len(opath):])) is not None:
                            return origin + loc[len(opath):len(opath) + n]
                        if opath[: len(loc)] == loc:        # the override built the mapping at loc
                            return origin
                    return None

                def locate(loc: tuple, reason: str) -> SpecIssue:
                    if (where := origin_of(loc)) is None:
                        return smap.issue(loc, reason)
                    line, col = smap.locate(where)
                    return SpecIssue(smap.file, line, col, dotted(loc), reason)

                def exists(loc: tuple) -> bool:
                    where = origin_of(loc)
                    return (where if where is not None else loc) in smap.positions

                try:
                    spec = CellSpec.model_validate(raw)
                except ValidationError as e:
                    seen_issue.update(_schema_issues(e, locate, exists))
                    continue
                if refs := _check_cell(spec, exp.repeats, locate, base_dir):
                    seen_issue.update(refs)
                    continue
                targets: tuple = ()
                if (tv := spec.machine.target) is not None:
                    if (tv, arch) not in resolved:
                        resolved[(tv, arch)] = _resolve_target(tv, arch, base_dir)
                    got = resolved[(tv, arch)]
                    if isinstance(got, SpecError):
                        seen_issue.update(got.issues)
                        continue
                    if isinstance(got, str):
                        seen_issue.add(locate(("machine", "target"), got))
                        continue
                    targets = got
                    if refs := _deploy_issues(spec, targets, locate):
                        seen_issue.update(refs)
                        continue
                parts: list[tuple[str, tuple | None]] = [(arch, None), (vname, vorigin)]
                axis_values = {}
                for (key, _), (value, origin) in zip(axes, combo, strict=True):
                    axis_values[key] = value
                    parts.append((f"{key.split('.')[-1]}_{_fmt(value)}", origin))
                cid = "-".join(p for p, _ in parts)
                if len(cid) > CELL_ID_MAX:
                    _, origin = max((p for p in parts if p[1] is not None), key=lambda p: len(p[0]))
                    seen_issue.add(smap.issue(origin, f"makes cell id '{cid[:40]}...' {len(cid)} characters long, "
                                              f"more than {CELL_ID_MAX} (it names a directory): shorten it"))
                    continue
                if cid in by_id:
                    differs = [o for (key, _), (value, o) in zip(axes, combo, strict=True)
                               if by_id[cid][key] != value]
                    seen_issue.add(smap.issue(differs[0] if differs else ("matrix",), f"two cells resolve to the "
                                              f"same id '{cid}' (ids keep only letters, digits and ._+- of a value)"))
                    continue
                by_id[cid] = axis_values
                cells.append(Cell(id=cid, variant=vname, axes=axis_values, spec=spec, targets=targets))
    issues = sorted(seen_issue, key=lambda i: (i.line, i.column, i.field, i.reason))
    return cells, issues


def _load(path: Path) -> LoadedExperiment:
    data, smap = load_yaml(path, display=str(path))
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        raise SpecError([smap.issue((), f"an experiment must be a mapping of keys to values, not {what}")])
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as e:
        raise SpecError(_schema_issues(e, smap.issue, smap.positions.__contains__)) from None
    if issues := _experiment_issues(exp, smap):
        raise SpecError(issues)
    cells, issues = _expand(exp, data, smap, path.resolve().parent)
    if issues:
        raise SpecError(issues)
    return LoadedExperiment(path=path, experiment=exp, cells=cells)


def load_experiment(path: str | Path) -> LoadedExperiment:
    """Load, validate and expand an experiment file. Raises SpecError (exit code 2) on any problem."""
    path = Path(path)
    try:
        return _load(path)
    except SpecError as e:
        if len(e.issues) <= MAX_ISSUES_SHOWN:
            raise
        more = SpecIssue(str(path), 0, 0, "", f"{len(e.issues) - MAX_ISSUES_SHOWN} more problems not shown")
        raise SpecError(e.issues[:MAX_ISSUES_SHOWN] + [more]) from None
