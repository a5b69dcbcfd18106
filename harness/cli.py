"""Command line: `python -m harness {validate,plan,build} EXPERIMENT`.

Errors the user can fix print one message each and exit 2 (bad input) or 1 (a failure
along the pipeline); nothing half-built is left behind.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import eta, paths, procs
from harness.errors import HarnessError, InputError
from harness.kernel.build import KernelBuilder, KernelRequest
from harness.kernel.cache import BuildCache
from harness.kernel.source import DEBIAN_TARBALL
from harness.spec import load_experiment
from harness.spec.loader import LoadedExperiment

DEFAULT_EXPERIMENT = paths.EXPERIMENTS_DIR / "dvfs_ramp.yaml"


def kernel_requests(le: LoadedExperiment, arch: str | None = None, variant: str | None = None) -> list[KernelRequest]:
    """The distinct kernels an experiment's cells need, in cell order, optionally filtered."""
    base_dir = le.path.resolve().parent
    seen: dict[KernelRequest, None] = {}
    for cell in le.cells:
        req = KernelRequest.from_spec(cell.spec.kernel, cell.spec.arch, base_dir)
        if (arch is None or req.arch == arch) and (variant is None or req.variant == variant):
            seen.setdefault(req)
    return list(seen)


def cmd_validate(args, out: Console) -> int:
    le = load_experiment(args.experiment)
    out.print(f"{args.experiment}: ok, {len(le.cells)} cells")
    return 0


def cmd_plan(args, out: Console) -> int:
    le = load_experiment(args.experiment)
    builder = KernelBuilder(BuildCache(args.cache_dir))
    status: dict[KernelRequest, tuple[str, bool]] = {}
    for req in kernel_requests(le):
        key, _, _ = builder.request_key(req)
        status[req] = (key, builder.cache.lookup(key) is not None)
    previews, source = _preview(args, le, builder, status)
    by_cell = {c.cell: c for c in previews}
    exp = le.experiment
    table = Table(title=f"{exp.name}: {len(le.cells)} cells x {exp.repeats} repeats")
    for col in ("cell", "arch", "variant", "kernel", "kernel key", "built", "would", "estimate"):
        table.add_column(col)
    base_dir = le.path.resolve().parent
    for cell in le.cells:
        req = KernelRequest.from_spec(cell.spec.kernel, cell.spec.arch, base_dir)
        key, built = status[req]
        c = by_cell[cell.id]
        table.add_row(cell.id, cell.spec.arch, cell.variant, req.variant, key[:12], "yes" if built else "no",
                      c.action, _estimate_cell(c.estimate))
    out.print(table)
    done = sum(b for _, b in status.values())
    out.print(f"kernels needed: {len(status)} ({done} built, {len(status) - done} to build); "
              f"cache: {builder.cache.root}")
    counts = {a: sum(c.action == a for c in previews) for a in ("resume", "run", "unknown")}
    run_dir = _run_dir(args, le)
    out.print(f"run directory: {run_dir}" + ("" if run_dir.is_dir() else " (not created yet)"), highlight=False)
    out.print(f"cells: {counts['resume']} resume (ok record with the same fingerprint), {counts['run']} run"
              + (f", {counts['unknown']} unknown (kernel not built yet: run or resume)" if counts["unknown"] else ""),
              highlight=False)
    for c in previews:
        if c.action != "resume":
            out.print(f"  {c.cell}: {c.action}: {c.why}", highlight=False, markup=False)
    todo = [c.estimate for c in previews if c.estimate is not None]
    where = f"; from the records in {source}" if source is not None and todo else ""
    builds = f"; kernel builds not included ({len(status) - done} to build)" if len(status) > done else ""
    out.print(f"ETA: {eta.describe(todo)}{where}{builds}", highlight=False, markup=False)
    return 0


def _run_dir(args, le: LoadedExperiment) -> Path:
    from harness.runner import run_id_for

    return (args.results_dir or paths.results_dir()).resolve() / (args.run_id or run_id_for(le))


def _estimate_cell(e) -> str:
    if e is None:
        return "-"
    return f"{eta.duration(e.seconds)} ({e.source})" if e.seconds is not None else "?"


def _preview(args, le: LoadedExperiment, builder: KernelBuilder, status: dict):
    """What `run` would do with each cell (resume or run) and the run's ETA, without building."""
    import json

    from harness.runner import Runner
    from harness.workload.build import workload_name

    def kernel_key(req: KernelRequest) -> str | None:
        key, built = status[req]
        if not built:
            return None
        return json.loads((builder.cache.lookup(key) / "metadata.json").read_text())["key"]

    runner = Runner(le, args.results_dir or paths.results_dir(), run_id=args.run_id, redo=args.redo,
                    cache=builder.cache, builder=builder)
    return runner.preview(kernel_key, workload_name)


def cmd_lava(args, out: Console) -> int:
    """One LAVA job definition per cell (harness/target/lava.py), for a board farm or a local
    lava-run; the kernel from the cache (built already: `build` first) unless --kernel-url; the
    workload's digest from its build (built here when missing)."""
    import hashlib
    import json

    from harness.guest import protocol
    from harness.runner import Runner
    from harness.target import lava
    from harness.workload import build as workload_build

    le = load_experiment(args.experiment)
    builder = KernelBuilder(BuildCache(args.cache_dir))
    runner = Runner(le, paths.results_dir(), cache=builder.cache, builder=builder)
    args.output.mkdir(parents=True, exist_ok=True)
    for p in runner.plan():
        kernel_url = args.kernel_url
        if kernel_url is None:
            key, _, _ = builder.request_key(p.request)
            built = builder.cache.lookup(key)
            if built is None:
                raise InputError(f"{p.cell.id}: kernel {p.request.label} is not built: run `python -m harness build "
                                 f"{args.experiment}` first, or give --kernel-url")
            meta = json.loads((built / "metadata.json").read_text())
            kernel_url = (built / meta["artifacts"]["image"]).as_uri()
        inputs = {protocol.GUEST_SCRIPT: p.script.encode()}
        inputs.update({protocol.probe_script(n): t.encode() for n, t in p.probe_scripts.items()})
        if p.wait_file is not None:
            inputs[protocol.WAIT_FILE] = p.wait_file.read_bytes()
        spec = p.cell.spec
        binary = workload_build.workload_dir(builder.cache, spec.arch) / "agentloop"
        job = lava.job(p.cell.id, spec.arch, inputs, kernel_url, args.rootfs_url, args.workload_url,
                       le.experiment.repeats, hashlib.sha256(binary.read_bytes()).hexdigest(),
                       timeout_min=max(10, spec.machine.run_timeout_s // 60),
                       cmdline=tuple(spec.machine.cmdline) + tuple(p.platform.cmdline), device_type=args.device_type)
        path = args.output / f"{p.cell.id}.yaml"
        path.write_text(lava.dump(job))
        out.print(f"{path}", highlight=False)
    return 0


def cmd_build(args, out: Console) -> int:
    le = load_experiment(args.experiment)
    reqs = kernel_requests(le, args.arch, args.config)
    if not reqs:
        raise InputError(f"{args.experiment}: no cell needs a kernel with arch={args.arch or 'any'} "
                         f"config={args.config or 'any'} (configs: agent-off, agent-on, +debug)")
    builder = KernelBuilder(BuildCache(args.cache_dir), jobs=args.jobs, console=Console(stderr=True))
    failures = 0
    for req in reqs:
        t0 = time.monotonic()
        try:
            res = builder.build(req)
        except InputError:
            raise
        except HarnessError as e:
            failures += 1
            out.print(f"[red]FAILED[/] {req.label}: {e}")
            continue
        state = "cached" if res.cached else "built"
        out.print(f"{state} {req.label} in {time.monotonic() - t0:.2f}s: {res.image}  (key {res.key})")
    return 1 if failures else 0


def cmd_kernel_tree(args, out: Console) -> int:
    from harness.kernel.devtree import make_dev_tree

    le = load_experiment(args.experiment)
    names = list(le.experiment.kernel.series)
    edit = args.series or (names[-1] if names else None)
    if edit is None:
        raise InputError(f"{args.experiment} applies no patch series: nothing to edit")
    src = le.experiment.kernel.source
    if src != "debian" and not Path(src).expanduser().is_absolute():
        src = str(le.path.resolve().parent / src)      # as `build` resolves it
    tree = make_dev_tree(args.dest.resolve(), names, edit, src, BuildCache(args.cache_dir))
    out.print(f"editable tree for series '{edit}': {tree}\n"
              f"  commits since tag series-base are the series; edit, commit, then: nox -s export-patches -- {tree}")
    return 0


def cmd_export_patches(args, out: Console) -> int:
    from harness.kernel.devtree import export_patches

    res = export_patches(args.tree, args.series)
    for f in res.files:
        out.print(f"wrote {f.relative_to(paths.REPO_ROOT) if f.is_relative_to(paths.REPO_ROOT) else f}")
    out.print(res.checkpatch, markup=False)
    if not res.clean:
        out.print("[red]checkpatch.pl reported problems[/]")
        return 1
    return 0


def cmd_checkpatch(args, out: Console) -> int:
    from harness.kernel import series as series_mod
    from harness.kernel import source
    from harness.kernel.devtree import checkpatch

    cache = BuildCache(args.cache_dir)
    tree = source.pristine_repo(source.resolve("debian", cache), cache)
    names = args.series or sorted(p.name for p in paths.PATCHES_DIR.iterdir() if p.is_dir())
    files = [p.path for p in series_mod.load_series(names)]
    report, clean = checkpatch(tree, files)
    out.print(report, markup=False)
    return 0 if clean else 1


def cmd_run(args, out: Console) -> int:
    from harness.runner import Runner

    le = load_experiment(args.experiment)
    results = args.results_dir or paths.results_dir()
    runner = Runner(le, results, run_id=args.run_id, redo=args.redo, cache=BuildCache(args.cache_dir),
                    console=out, only=args.cell, jobs=args.jobs)
    outcomes = runner.run()
    failed = [o for o in outcomes if o.status == "failed"]
    return 1 if failed else 0


def cmd_testbox_run(args, out: Console) -> int:
    """Run an experiment whose remote cells name `testbox`, with the SSH test box booted for it
    and named in a targets inventory of its own (kernel deploy by kexec; virtual time unless
    --realtime). The file is checked against a stand-in entry first, so bad input costs no boot."""
    import os

    import yaml

    from harness.runner import Runner
    from harness.target import inventory, testbox

    def load_with(entry: dict, where: Path):
        where.write_text(yaml.safe_dump({"targets": {"testbox": entry}}, sort_keys=False))
        old = os.environ.get(inventory.ENV_INVENTORY)
        os.environ[inventory.ENV_INVENTORY] = str(where)
        try:
            return load_experiment(args.experiment)
        finally:
            if old is None:
                os.environ.pop(inventory.ENV_INVENTORY, None)
            else:
                os.environ[inventory.ENV_INVENTORY] = old

    cache = BuildCache(args.cache_dir)
    icount = not args.realtime
    stand_in = {"url": "ssh://testbox", "deploy": "kexec", "cmdline": list(testbox.DEPLOY_CMDLINE),
                **({"clock": "virtual"} if icount else {})}
    tmp = cache.dir("tmp")
    check = tmp / f"testbox-check-{os.getpid()}.yaml"
    try:
        le = load_with(stand_in, check)
    finally:
        check.unlink(missing_ok=True)
    boxed = [c for c in le.cells if c.targets and c.targets[0].name == "testbox"]
    if not boxed:
        raise InputError(f"{args.experiment}: no cell has machine.target: testbox")
    shapes = {(c.spec.machine.cpus, c.spec.machine.memory, c.spec.machine.icount_shift) for c in boxed}
    if len(shapes) > 1:   # one box serves them all
        raise InputError(f"{args.experiment}: the cells on testbox ask for different machines (cpus, memory, "
                         f"icount_shift: {', '.join(map(str, sorted(shapes)))}); one box runs them all: make "
                         "them agree")
    m = boxed[0].spec.machine
    out.print(f"booting the SSH test box ({m.cpus} CPUs, {m.memory}, "
              f"{'QEMU virtual time' if icount else 'real time'}) ...", highlight=False)
    with testbox.running_box(cache, icount=icount, cpus=m.cpus, memory=m.memory, icount_shift=m.icount_shift,
                             console=Console(stderr=True)) as box:
        out.print(f"test box up in {box.boot_s:.0f} s on {testbox.HOST}:{box.port} (console: {box.console})",
                  highlight=False)
        inv = box.keys.dir / "targets.yaml"
        le = load_with(testbox.inventory_entry(box), inv)
        runner = Runner(le, args.results_dir or paths.results_dir(), run_id=args.run_id, redo=args.redo,
                        cache=cache, console=out, only=args.cell, jobs=args.jobs)
        outcomes = runner.run()
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_report(args, out: Console) -> int:
    from harness.analysis.report import write_run_report

    if args.output is not None and args.output.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{args.output}: the report is HTML, name it *.html")
    for f in args.tidy or ():
        if f.suffix.lower() not in (".csv", ".parquet"):
            raise InputError(f"--tidy {f}: the tidy table is written as CSV or Parquet, name it *.csv or *.parquet")
    reps = []
    for run_dir in args.run_dir:
        rep = write_run_report(run_dir)
        reps.append(rep)
        if rep.table is not None:
            out.print(rep.table)
        for line in rep.notes:
            out.print(line, highlight=False, markup=False)
        if rep.summary:
            out.print(f"summary: {rep.summary}, {rep.summary_json.name}; steps: "
                      f"{', '.join(p.name for p in rep.tidy) or '-'}", highlight=False)
    if args.tidy:
        from harness.analysis.report import write_tidy

        written, note = write_tidy([r.run for r in reps], *args.tidy)
        for line in [note] if note else []:
            out.print(line, highlight=False, markup=False)
        for f in written:
            out.print(f"tidy table: {f}", highlight=False)
    if args.output is not None:
        from harness.analysis.html_report import write_html_report

        out.print(f"html report: {write_html_report([r.run for r in reps], args.output)}", highlight=False)
    return 0


def cmd_decompose(args, out: Console) -> int:
    """The per-step decomposition again, from a run's stored data (the share the guest wrote and
    the records): nothing is built or booted, so a changed analysis re-runs on old traces."""
    from rich.table import Table

    from harness import records
    from harness.analysis import decompose
    from harness.analysis.runs import load_run
    from harness.guest import protocol, share
    from harness.kernel.cache import atomic_write_text
    from harness.runner import Runner

    done = 0
    for run_dir in args.run_dir:
        run = load_run(run_dir)
        table = Table(title=f"decomposition: {run.experiment} ({run_dir.name}), mean us per step")
        for col in ("cell", "steps", "step", *decompose.PARTS, "sum/step p50", "ok"):
            table.add_column(col, justify="left" if col == "cell" else "right")
        for c in sorted(run.ok, key=lambda c: c.id):
            spec = decompose.spec_of(c.record.spec)
            if (args.cell and not any(x in c.id for x in args.cell)) or not decompose.applies(spec):
                continue
            try:
                parts, dc = decompose.from_share(c.dir / protocol.SHARE, spec, c.record.repeats,
                                                 Runner._probe_limit(spec))
            except (ValueError, share.ShareError) as e:
                out.print(f"{c.id}: not decomposed: {e}", highlight=False, markup=False)
                continue
            atomic_write_text(c.dir / records.CELL_DECOMPOSITION, decompose.to_csv(parts))
            done += 1
            table.add_row(c.id, f"{dc.decomposed}/{dc.steps}", f"{dc.step_mean_us or 0:.1f}",
                          *(f"{dc.mean_us.get(p, float('nan')):.1f}" for p in decompose.PARTS),
                          f"{dc.sum_ratio_p50:.3f}" if dc.sum_ratio_p50 is not None else "-",
                          "ok" if dc.within_tolerance else "OUT")
        out.print(table)
    if not done:
        raise InputError("no cell to decompose: it takes an ok cell probed with dvfs_ramp and wake_path")
    return 0


def cmd_frontier(args, out: Console) -> int:
    """Each cell against the physical frontier again, from its stored data (the loop's steps files in
    the share and the record's meter): a changed bound re-runs on old runs. Rewrites a record only
    when its frontier changed."""
    from rich.table import Table

    from harness import records
    from harness.analysis.decompose import spec_of
    from harness.analysis.efficiency import cell_frontier
    from harness.analysis.runs import load_run
    from harness.analysis.steps import StepsFormatError, steps_from_columns
    from harness.guest import protocol, share
    from harness.runner import Runner

    seen = rewritten = 0
    for run_dir in args.run_dir:
        run = load_run(run_dir)
        table = Table(title=f"frontier: {run.experiment} ({run_dir.name})")
        for col in ("cell", "bound uJ/step", "measured uJ/step", "eta", "eta by repeat", "steps bounded", "record"):
            table.add_column(col, justify="left" if col in ("cell", "record") else "right")
        for c in sorted(run.ok, key=lambda c: c.id):
            if args.cell and not any(x in c.id for x in args.cell):
                continue
            rec = c.record
            if rec.platform is None or rec.guest is None:
                continue
            try:
                spec = spec_of(rec.spec)
                raw = [Runner._steps(spec, c.dir / protocol.SHARE, protocol.repeat_files(r), r)
                       for r in range(rec.repeats)]
                f = cell_frontier(spec, steps_from_columns(raw), rec.platform, rec.guest.timing)
            except (StepsFormatError, share.ShareError, ValueError) as e:   # pydantic's too
                out.print(f"{c.id}: no frontier: {e}", highlight=False, markup=False)
                continue
            seen += 1
            changed = f != rec.platform.frontier
            if changed:
                rec.platform.frontier = f
                records.write(c.dir / records.CELL_RESULT, rec)
                rewritten += 1
            table.add_row(c.id, *(("-",) * 5 if f is None else (
                f"{f.bound_uj:.1f}", f"{f.energy_uj:.1f}", f"{f.eta:.3f}",
                " ".join(f"{e:.3f}" for e in f.eta_by_repeat), str(f.per_step or "mean step"))),
                "rewritten" if changed else "unchanged")
        out.print(table)
    if not seen:
        raise InputError("no cell with its share's steps files and a platform record: nothing to bound")
    if rewritten:
        out.print(f"{rewritten} record(s) rewritten: `python -m harness report RUN_DIR` derives summary.json and "
                  "the plots from them again", highlight=False, markup=False)
    return 0


def cmd_schema(args, out: Console) -> int:
    import json

    from harness.spec.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
        out.print(f"wrote {args.output}; check a file with: check-jsonschema --schemafile {args.output} FILE.yaml",
                  highlight=False)
    else:
        sys.stdout.write(text)
    return 0


def _fmt_estimate(e: dict, pct: bool = False) -> str:
    """value [95 % CI] and p, with enough digits to tell 99.76 % from 99.87 %."""
    if e["value"] != e["value"]:   # NaN
        return "-"
    f = (lambda v: f"{v * 100:+.2f}%") if pct else (lambda v: f"{v:.4f}")
    text = f"{f(e['value'])} [{f(e['ci95_lo'])}, {f(e['ci95_hi'])}]"
    if e.get("p_value") is not None:
        text += f" p={e['p_value']:.3g}"
    if not e.get("level", "").startswith("repeats"):
        text += " (steps only)"
    return text


def cmd_compare(args, out: Console) -> int:
    import json

    from harness.analysis import compare as cmp
    from harness.analysis.runs import load_run

    runs = [load_run(d) for d in args.run_dir]
    if len(runs) == 1:
        res = cmp.compare_run(runs[0], args.treatment, args.stock, args.floor)
    else:
        res = cmp.compare_runs(runs, args.metric)
    for cell, why in sorted(res.left_out.items()):
        out.print(f"left out {cell}: {why}", highlight=False, markup=False)
    if not res.groups:
        what = (f"ok cells of the variants {args.treatment}, {args.stock} and {args.floor}" if len(runs) == 1
                else f"an ok cell in {args.run_dir[0]} with a match in another run")
        raise InputError(f"{', '.join(map(str, args.run_dir))}: no arch and matrix point has {what}")
    if len(runs) == 1:
        t = Table(title=f"{args.treatment} vs {args.stock} (gap to {args.floor}); 95% hierarchical bootstrap CIs, "
                  f"p: Mann-Whitney on repeats vs {args.stock}")
        for col in ("cells", "repeats", "gap closed p50", "gap closed p99", f"energy / {args.stock}",
                    f"energy / {args.floor}"):
            t.add_column(col)
        for label, r in res.groups.items():
            t.add_row(label, "/".join(str(n) for n in r["repeats"].values()), _fmt_estimate(r["gap_closed_p50"]),
                      _fmt_estimate(r["gap_closed_p99"]), _fmt_estimate(r["energy_vs_stock"]),
                      _fmt_estimate(r["energy_vs_floor"]))
    else:
        m = args.metric
        t = Table(title=f"{m} latency against {res.runs[0]}; 95% hierarchical bootstrap CIs, "
                  "p: Mann-Whitney on repeats")
        t.add_column("cell")
        t.add_column(f"{res.runs[0]} p50 / p99 us")
        others = res.runs[1:]
        for name in others:
            t.add_column(f"{name}: p50 change")
            t.add_column(f"{name}: p99 change")
        for label, r in res.groups.items():
            b = r["baseline"]
            cells = [label, f"{b[m + '_p50_us']:.1f} / {b[m + '_p99_us']:.1f}"]
            for name in others:
                o = r["runs"].get(name)
                cells += ([_fmt_estimate(o["p50_change"], pct=True), _fmt_estimate(o["p99_change"], pct=True)]
                          if o else ["-", "-"])
            t.add_row(*cells)
    out.print(t)
    if args.json:
        args.json.write_text(json.dumps({"groups": res.groups, "left_out": res.left_out}, indent=2) + "\n")
    return 0


def cmd_tax(args, out: Console) -> int:
    """The slowpath tax per 10,000 steps against each run's floor cell, from the stored records (no
    build, no boot): every output is complete or not there."""
    import json

    from rich.text import Text

    from harness.analysis import tax
    from harness.kernel.cache import atomic_write_text

    if args.output is not None and args.output.suffix.lower() != ".md":
        raise InputError(f"{args.output}: the table is Markdown, name it *.md")
    for f in (args.output, args.json):
        if f is not None and f.is_dir():
            raise InputError(f"{f}: a directory, not a file to write")
    if args.output is not None and args.json is not None and args.output.resolve() == args.json.resolve():
        raise InputError(f"{args.output}: given for both the JSON and the Markdown")
    table = tax.tax(args.run_dir)
    for title, part in ((f"slowpath tax, s per {tax.PER_STEPS:,} steps, against the floor", tax.rows(table)),
                        ("the tax split into the decomposition's parts (traced runs)", tax.split_rows(table))):
        if part is None:
            continue
        t = Table(title=title)
        for col in part[0]:
            t.add_column(col)
        for row in part[1]:
            t.add_row(*(Text(c) for c in row))
        out.print(t)
    for line in tax.notes(table):
        out.print(line, highlight=False, markup=False)
    texts = {}    # both made before either is written
    if args.json:
        texts[args.json] = json.dumps(table.as_dict(), indent=2) + "\n"
    if args.output:
        texts[args.output] = tax.markdown(table)
    for f, text in texts.items():
        atomic_write_text(f, text)
        out.print(f"wrote {f}", highlight=False, markup=False)
    return 0


def cmd_trace(args, out: Console) -> int:
    from harness.analysis.trace import write_trace

    output = args.output or Path(f"{args.cell_dir.resolve().name}.trace.json")
    if output.suffix.lower() != ".json":
        raise InputError(f"{output}: the trace is JSON, name it *.json")
    s = write_trace(args.cell_dir, output)
    out.print(f"trace: {s.path} (timeline: {s.timeline}); events: "
              + ", ".join(f"{n} {k}" for k, n in sorted(s.events.items())), highlight=False, markup=False)
    for t in s.tracks:
        out.print(f"  track: {t}", highlight=False, markup=False)
    for what, why in s.absent.items():
        out.print(f"  absent: {what}: {why}", highlight=False, markup=False)
    for note in s.notes:
        out.print(f"  note: {note}", highlight=False, markup=False)
    out.print("open it in https://ui.perfetto.dev (Open trace file; it stays in the browser) or chrome://tracing",
              highlight=False, markup=False)
    return 0


def cmd_probes_render(args, out: Console) -> int:
    from harness import probes

    text = probes.render(args.name, comm_prefix=args.comm_prefix, output=args.mode)
    if args.output:
        args.output.write_text(text)
        out.print(f"wrote {args.output}; run it with: bpftrace -f json {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_probes_list(args, out: Console) -> int:
    from harness import probes

    t = Table(title="probe tools")
    for col in ("name", "measures", "attaches to", "outputs"):
        t.add_column(col)
    for name, tool in probes.PROBES.items():
        t.add_row(name, tool.DESCRIPTION, "\n".join(tool.TRACEPOINTS), ", ".join(probes.outputs(name)))
    out.print(t)
    return 0


def cmd_presets(args, out: Console) -> int:
    from harness.platform import presets

    if args.extract is None:
        if args.output is not None:
            raise InputError("-o/--output goes with --extract")
        t = Table(title="platform presets (harness/platform/presets/)")
        for col in ("name", "source", "OPPs", "idle states (exit us)"):
            t.add_column(col)
        for name in presets.names():
            doc = presets.document(name)
            opps, src = doc["opps"], doc["source"]
            t.add_row(name, f"{src['file']} (Linux {src['kernel']})",
                      f"{len(opps)}: {opps[0]['khz'] // 1000}-{opps[-1]['khz'] // 1000} MHz, "
                      f"{opps[0]['microvolt'] / 1e6:.3f}-{opps[-1]['microvolt'] / 1e6:.3f} V",
                      ", ".join(f"{c['name']} ({c['exit_latency_us']})" for c in doc["cstates"]))
        out.print(t)
        return 0
    for f in presets.write_presets(args.extract, args.output or presets.PRESETS_DIR):
        out.print(f"wrote {f.relative_to(paths.REPO_ROOT) if f.is_relative_to(paths.REPO_ROOT) else f}")
    return 0


def cmp_metrics() -> tuple[str, ...]:
    from harness.analysis.compare import METRICS

    return tuple(METRICS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def experiment_arg(sp, optional=False):
        if optional:
            sp.add_argument("experiment", nargs="?", type=Path, default=DEFAULT_EXPERIMENT,
                            help=f"experiment YAML (default: {DEFAULT_EXPERIMENT.relative_to(paths.REPO_ROOT)})")
        else:
            sp.add_argument("experiment", type=Path, help="experiment YAML")
        sp.add_argument("--cache-dir", type=Path, default=None, help="build cache (default: $HARNESS_CACHE_DIR "
                        "or $XDG_CACHE_HOME/agent-latency)")

    sp = sub.add_parser("validate", help="check an experiment file")
    experiment_arg(sp)
    sp.set_defaults(func=cmd_validate)
    sp = sub.add_parser("plan", help="print the experiment's cells, the kernels they need, which cells a run "
                        "would resume or run, and its ETA from earlier records")
    experiment_arg(sp)
    sp.add_argument("--results-dir", type=Path, default=None, help="as for run")
    sp.add_argument("--run-id", help="as for run (default: <experiment>-<content hash>)")
    sp.add_argument("--redo", action="store_true", help="as for run: every cell would run")
    sp.set_defaults(func=cmd_plan)
    sp = sub.add_parser("build", help="build (or reuse) the kernels an experiment needs")
    experiment_arg(sp, optional=True)
    sp.add_argument("--arch", choices=("x86_64", "arm64"))
    sp.add_argument("--config", choices=("agent-off", "agent-on", "agent-off+debug", "agent-on+debug"),
                    help="kernel variant to build")
    sp.add_argument("--jobs", "-j", type=int, default=None)
    sp.set_defaults(func=cmd_build)

    sp = sub.add_parser("run", help="build, boot and run every cell; summary table and latency plot")
    experiment_arg(sp)
    sp.add_argument("--results-dir", type=Path, default=None,
                    help="where runs go (default: $HARNESS_RESULTS_DIR or results/)")
    sp.add_argument("--run-id", help="name of the run directory (default: <experiment>-<content hash>)")
    sp.add_argument("--redo", action="store_true", help="run cells again even if their results exist")
    sp.add_argument("--cell", action="append", help="only cells whose id contains this (repeatable)")
    sp.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="boot up to N virtual-time guests at once (each runs on one host thread under "
                         "-icount, so N up to the host's cores measures what one at a time does; real-time "
                         "cells still run one at a time; default 1)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("testbox", help="the SSH test box (a QEMU guest with Debian and sshd, harness/target/"
                        "testbox.py): `testbox run EXPERIMENT` boots it and runs the cells that name it")
    tsub = sp.add_subparsers(dest="testbox_cmd", required=True)
    tp = tsub.add_parser("run", help="boot the box, name it `testbox` in an inventory of its own (kernel deploy by "
                         "kexec), run the experiment, stop the box")
    experiment_arg(tp)
    tp.add_argument("--results-dir", type=Path, default=None)
    tp.add_argument("--run-id")
    tp.add_argument("--redo", action="store_true")
    tp.add_argument("--cell", action="append")
    tp.add_argument("--jobs", type=int, default=1, metavar="N", help="as for run (the box's cells run one at a time)")
    tp.add_argument("--realtime", action="store_true", help="boot the box without -icount (cells then need "
                    "machine.timing: auto or realtime)")
    tp.set_defaults(func=cmd_testbox_run)

    sp = sub.add_parser("report", help="re-derive a run's summary and plot from its records (no build, no boot); "
                        "with -o, one self-contained HTML report of all the runs given")
    sp.add_argument("run_dir", type=Path, nargs="+", help="run directories (results/<experiment>-<hash>)")
    sp.add_argument("-o", "--output", type=Path, metavar="FILE.html",
                    help="also write one offline HTML report of these runs (figures inline, faceted by arch)")
    sp.add_argument("--tidy", type=Path, action="append", metavar="FILE.{parquet,csv}",
                    help="also write every measured step of these runs as one tidy table (a row per step: run, "
                    "cell, arch, variant, axes, repeat, step columns); repeatable, the format by suffix")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("lava", help="write a LAVA job definition per cell (board farms; results read back by "
                        "harness.target.lava)")
    experiment_arg(sp)
    sp.add_argument("-o", "--output", type=Path, default=Path("lava-jobs"), help="directory for the jobs")
    sp.add_argument("--kernel-url", help="the kernel image's URL (default: the cached build, as file://)")
    sp.add_argument("--rootfs-url", default="file:///var/lib/lava/rootfs/debian-12.ext4",
                    help="a raw ext4 root filesystem image (e.g. the SSH test box's, harness/target/testbox.py)")
    sp.add_argument("--workload-url", default="file:///var/lib/lava/agentloop",
                    help="the static agentloop binary for the arch (the device fetches it with wget or curl)")
    sp.add_argument("--device-type", default="qemu")
    sp.set_defaults(func=cmd_lava)

    sp = sub.add_parser("schema", help="print the experiment file's JSON Schema (structure and field bounds; "
                        "`validate` checks the rest)")
    sp.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser("compare", help="one run: the stock -> floor gap a treatment closes, and its energy; "
                        "several runs: every cell against the first run")
    sp.add_argument("run_dir", type=Path, nargs="+", help="run directories (results/<experiment>-<hash>); with "
                    "several, the first is the baseline")
    sp.add_argument("--treatment", default="agent", help="variant under test (default: agent)")
    sp.add_argument("--stock", default="stock", help="the reference variant (default: stock)")
    sp.add_argument("--floor", default="floor", help="the physical floor variant (default: floor)")
    sp.add_argument("--metric", choices=sorted(cmp_metrics()), default="step",
                    help="several runs: the latency compared, step (signal -> done) or wake (signal -> "
                    "running) (default: step)")
    sp.add_argument("--json", type=Path, help="also write the figures as JSON")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("tax", help="the slowpath tax per 10,000 steps: each cell's mean and p50 step minus the floor "
                        "cell's of the same run and arch, with hierarchical bootstrap CIs, split into the "
                        "decomposition's parts where the cells have one, deadline misses for periodic loops "
                        "(from the records; no build, no boot)")
    sp.add_argument("run_dir", type=Path, nargs="+", help="run directories (results/<experiment>-<hash>)")
    sp.add_argument("--json", type=Path, help="also write the figures as JSON")
    sp.add_argument("-o", "--output", type=Path, metavar="FILE.md", help="also write the tables as Markdown")
    sp.set_defaults(func=cmd_tax)

    sp = sub.add_parser("trace", help="one cell as a Chrome trace-event JSON for the Perfetto UI: per-step spans per "
                        "agent, frequency and idle counters, windows (from the records; no build, no boot)")
    sp.add_argument("cell_dir", type=Path, help="a cell directory (results/<experiment>-<hash>/<cell>)")
    sp.add_argument("-o", "--output", type=Path, metavar="FILE.json",
                    help="where to write it (default: ./<cell>.trace.json)")
    sp.set_defaults(func=cmd_trace)

    sp = sub.add_parser("decompose", help="split each step of the traced runs into C-state exit, irq -> wakeup, "
                        "runqueue, deferred work, phases, preemption, DVFS deficit and compute, from the stored "
                        "probes (dvfs_ramp + wake_path) and the loop's stamps; writes <cell>/decomposition.csv")
    sp.add_argument("run_dir", type=Path, nargs="+")
    sp.add_argument("--cell", action="append", help="only cells whose id contains this (repeatable)")
    sp.set_defaults(func=cmd_decompose)

    sp = sub.add_parser("frontier", help="each cell against the physical frontier again (eta = bound / measured "
                        "energy per step), from the stored steps files and meter; rewrites records it changes")
    sp.add_argument("run_dir", type=Path, nargs="+")
    sp.add_argument("--cell", action="append", help="only cells whose id contains this (repeatable)")
    sp.set_defaults(func=cmd_frontier)

    sp = sub.add_parser("probes", help="the bpftrace tools")
    psub = sp.add_subparsers(dest="probes_command", required=True)
    pr = psub.add_parser("render", help="write a probe's bpftrace script to run standalone")
    pr.add_argument("name", help="probe name, e.g. wakeup_latency")
    pr.add_argument("--comm-prefix", default="agent-", help="trace threads whose comm starts with this")
    pr.add_argument("--mode", choices=("events", "summary"), default="events",
                    help="events: a line per event (what the harness parses); summary: in-kernel histograms "
                    "printed at exit, cheaper on busy machines (workqueue_delay, pagecache, vfs_metadata)")
    pr.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    pr.set_defaults(func=cmd_probes_render)
    pr = psub.add_parser("list", help="the tools, what they measure and what they attach to")
    pr.set_defaults(func=cmd_probes_list)

    sp = sub.add_parser("presets", help="the platform presets (real SoC tables), or regenerate them from a kernel tree")
    sp.add_argument("--extract", nargs="?", type=Path, const=DEBIAN_TARBALL, metavar="TREE",
                    help=f"regenerate the preset files from a kernel source directory or tarball (default: "
                    f"{DEBIAN_TARBALL}, about a minute to read)")
    sp.add_argument("-o", "--output", type=Path, help="where --extract writes (default: harness/platform/presets/)")
    sp.set_defaults(func=cmd_presets)

    sp = sub.add_parser("kernel-tree", help="turn the patch series into an editable git tree")
    sp.add_argument("dest", type=Path, help="where to create the tree")
    sp.add_argument("--series", help="series to edit (default: the experiment's last)")
    experiment_arg(sp, optional=True)
    sp.set_defaults(func=cmd_kernel_tree)
    sp = sub.add_parser("export-patches", help="write a kernel-tree's commits back as the series")
    sp.add_argument("tree", type=Path)
    sp.add_argument("--series", help="series to write (default: the one the tree was made for)")
    sp.set_defaults(func=cmd_export_patches)
    sp = sub.add_parser("checkpatch", help="run scripts/checkpatch.pl on the patch series")
    sp.add_argument("series", nargs="*", help="series names (default: all)")
    sp.add_argument("--cache-dir", type=Path, default=None)
    sp.set_defaults(func=cmd_checkpatch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # whatever dispositions were inherited (nohup, a background job): stop, and stop the children
        procs.install_signal_handlers()
    out = Console(soft_wrap=True)
    if not out.is_terminal:
        out = Console(soft_wrap=True, width=200)   # logs and CI: keep table rows on one line
    try:
        return args.func(args, out)
    except HarnessError as e:  # InputError (exit 2) included: plain text, never wrapped
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:   # procs.Terminated too: SIGINT, SIGTERM, SIGHUP
        code = getattr(e, "exit_code", 130)
        print(f"interrupted (signal {code - 128}): every guest and build this run started is stopped",
              file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
