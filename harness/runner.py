"""`python -m harness run`: plan -> prepare -> execute on a guest backend -> collect -> record.

- plan: the cells to run, each with its kernel request, guest script and probe scripts; no side
  effects, every input error found here (exit 2, nothing created).
- prepare: kernels, accelerator, root filesystem and workload binary for every planned cell, still
  before the run directory exists (a kernel-stage input error is exit 2 with nothing written; a
  failed build fails only the cells that need that kernel).
- execute: per cell, a fresh share with the host's inputs, then the guest, on the backend
  (virtme-ng, or a fake that replays recordings). A guest that dies before the workload starts is
  retried (`INFRA_RETRIES`), each retry counted as an infrastructure failure.
- collect: what the guest wrote, read from the share without following links and within caps,
  parsed into steps, platform and probe records; unreadable output fails the cell, not the run.
- record: the cell's typed record (`harness.records`), then the run index; the summary and plot
  are derived from the records by the same offline path `python -m harness report` takes.

Each cell is isolated: a build failure, a panic, a hang or bad output marks that cell failed (with
its reason and console log) and the next cell runs. A cell whose record says ok, with the same
fingerprint (spec, kernel, workload binary, script, probes), is skipped when the run is started
again, unless `redo` is set. A run directory is locked against a second concurrent run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.text import Text

from harness import eta, probes, procs, records
from harness.analysis import decompose, report
from harness.analysis.efficiency import cell_frontier
from harness.analysis.steps import StepsFormatError, cell_stats, parse_steps_csv, steps_from_columns, to_parsed_csv
from harness.errors import HarnessError, InputError
from harness.guest import neighbour, platform, protocol, share
from harness.guest.accel import AccelChoice
from harness.guest.backend import GuestBackend, VngBackend
from harness.guest.vm import X86_TCG_CPU, GuestConfig, GuestResult, check_path
from harness.guest.watch import StatusWatch
from harness.kernel.build import BuildResult, KernelBuilder, KernelRequest
from harness.kernel.cache import BuildCache, atomic_write_text, sha256_bytes, sha256_json
from harness.probes import bpftrace_json
from harness.probes.context import LoopTimeline, ProbeContext
from harness.records import CellResult, RunIndex
from harness.run_progress import RunProgress
from harness.spec.loader import Cell, LoadedExperiment
from harness.target import deploy, knobs
from harness.target.inventory import Target
from harness.target.ssh import SshBackend, reading_for

INFRA_RETRIES = 2
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,95}")


@dataclass
class CellOutcome:
    cell: Cell
    status: str                  # ok | failed | skipped (already done)
    reason: str = ""
    dir: Path | None = None
    record: CellResult | None = None

    @property
    def stats(self) -> dict:
        return self.record.stats.model_dump() if self.record and self.record.stats else {}


@dataclass
class CellPlan:
    """One cell, resolved down to what the guest will run."""

    cell: Cell
    request: KernelRequest
    probes: list[str]
    probes_pending: list[str]
    platform: platform.PlatformPlan
    script: str
    probe_scripts: dict[str, str]
    wait_file: Path | None
    compute_file: Path | None = None


@dataclass
class Prepared:
    """What a cell's guest needs besides its script, resolved before the run directory exists."""

    kernel: BuildResult | None = None
    kernel_error: str = ""
    accel: AccelChoice | None = None
    timing: str = ""
    rootfs: Path | None = None
    tools: Path | None = None
    host: dict[str, str] = field(default_factory=dict)
    target: Target | None = None        # a remote target: no kernel is built or booted
    in_fleet: bool = False              # cells run in parallel (a fleet's targets, or local --jobs)


@dataclass(frozen=True)
class CellPreview:
    """What `run` would do with a cell, told before anything is built (`plan`)."""

    cell: str
    arch: str
    action: str                        # resume (ok record, same fingerprint) | run | unknown
    why: str
    estimate: eta.CellEstimate | None  # for the cells that would (or may) run


def run_id_for(le: LoadedExperiment) -> str:
    """Stable per experiment content: running the same file again resumes the same run."""
    return f"{le.experiment.name}-{sha256_bytes(le.path.read_bytes())[:8]}"


class Runner:
    def __init__(self, le: LoadedExperiment, results_root: Path, run_id: str | None = None, redo: bool = False,
                 cache: BuildCache | None = None, console: Console | None = None, only: list[str] | None = None,
                 backend: GuestBackend | None = None, builder=None, poll_s: float = 1.0,
                 progress_interval: float = 60.0, target_backend=None, jobs: int = 1):
        self.le = le
        if not 1 <= jobs <= 64:
            raise InputError(f"--jobs {jobs}: from 1 to 64 cells at a time")
        # local cells booted at once: each virtual-time guest runs its vCPUs on one host thread
        # (-icount), and its clock counts instructions, so two on two cores measure what one does;
        # real-time cells (KVM, plain TCG) share the host's CPUs with each other and run one at a time
        self.jobs = jobs
        self.console = console or Console()
        if jobs > (host_cpus := len(os.sched_getaffinity(0))):
            self.console.print(f"[yellow]warning[/]: --jobs {jobs} on {host_cpus} host CPUs: guests wait for "
                               "the host, which under virtual time costs wall time, and may move an idle guest's "
                               "clock (icount sleep=on follows real time while the guest idles)", highlight=False)
        self.cache = cache or BuildCache()
        self.builder = builder or KernelBuilder(self.cache, console=Console(stderr=True))
        self.backend = backend or VngBackend(self.cache, console=Console(stderr=True))
        run_id = run_id or run_id_for(le)
        if not RUN_ID.fullmatch(run_id):
            raise InputError(f"--run-id {run_id!r}: a run id is one name of letters, digits and ._+- "
                             "(at most 96 characters), inside the results directory")
        self.results_root = results_root.resolve()
        self.run_dir = self.results_root / run_id
        self.redo = redo
        self.only = only
        self.poll_s = poll_s                      # how often a running guest's status file is read
        self.progress_interval = progress_interval
        self.progress: RunProgress | None = None
        # a remote target's backend (SSH through fabric; the tests give one with a fake connection)
        self.target_backend = target_backend or (lambda t: SshBackend(self.cache, t))
        self._target_backends: dict[str, GuestBackend] = {}
        self._backends_lock = threading.Lock()

    def backend_for(self, cell: Cell, target: Target | None = None) -> GuestBackend:
        """The VM backend, or a remote target's (one per target, made once): `target`, else the
        cell's first."""
        if not cell.targets:
            return self.backend
        t = target or cell.targets[0]
        with self._backends_lock:
            if t.name not in self._target_backends:
                self._target_backends[t.name] = self.target_backend(t)
            return self._target_backends[t.name]

    # -- plan ------------------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        if not self.only:
            return self.le.cells
        picked = [c for c in self.le.cells if any(pat in c.id for pat in self.only)]
        if not picked:
            ids = ", ".join(c.id for c in self.le.cells)
            raise InputError(f"no cell id contains any of {self.only} (cells: {ids})")
        return picked

    def plan(self) -> list[CellPlan]:
        check_path(self.run_dir, "run directory")     # virtme-ng shares <run>/<cell>/guest
        check_path(self.cache.root, "cache directory")  # ... and boots images from the cache
        base_dir = self.le.path.resolve().parent
        plans = []
        for cell in self.cells():
            spec = cell.spec
            real = not cell.simulated   # a remote target's own platform: its real sysfs knobs and counters
            plat = knobs.plan(spec.platform) if real else platform.plan(spec.platform, spec.arch)
            names = [p for p in spec.probes if p in probes.PROBES]
            ab = spec.workload.abuser
            script = protocol.render(spec.workload, self.le.experiment.repeats,
                                     setup=plat.setup, neighbour_setup=neighbour.setup(ab) if ab else [],
                                     teardown=neighbour.teardown() if ab else [],
                                     extra_args=plat.workload_args, probes=names, probe_run=spec.probe_run,
                                     cpus=spec.machine.cpus, real=real,
                                     sched_ext=spec.platform.sched_ext is not None)
            wf = spec.workload.wait.file
            cf = spec.workload.compute.file if spec.workload.compute is not None else None
            plans.append(CellPlan(
                cell, KernelRequest.from_spec(spec.kernel, spec.arch, base_dir), names,
                [p for p in spec.probes if p not in probes.PROBES], plat, script,
                {name: probes.render(name) for name in names},
                (Path(wf) if Path(wf).is_absolute() else base_dir / wf) if wf else None,
                (Path(cf) if Path(cf).is_absolute() else base_dir / cf) if cf else None))
        return plans

    # -- prepare ---------------------------------------------------------------------------------
    def prepare(self, plans: list[CellPlan]) -> dict[str, Prepared]:
        """Kernels (each distinct one once), accelerator, rootfs and tools for every cell. Input
        errors propagate (exit 2, nothing in the results); a failed build is that cell's failure."""
        builds: dict[KernelRequest, BuildResult | str] = {}
        out: dict[str, Prepared] = {}
        for p in plans:
            if p.cell.targets:   # a remote target runs its own kernel, or one deployed to it
                out[p.cell.id] = prep = self._prepare_remote(p)
                if p.cell.deploys and not prep.kernel_error:
                    got = self._build(p, builds)
                    if isinstance(got, str):
                        prep.kernel_error = got
                    elif (why := _deploy_problem(got)) is not None:
                        prep.kernel_error = why
                    else:
                        prep.kernel = got
                continue
            got = self._build(p, builds)
            prep = Prepared()
            out[p.cell.id] = prep
            if isinstance(got, str):
                prep.kernel_error = got
                continue
            prep.kernel = got
            spec = p.cell.spec
            check_path(got.image, "kernel image")
            # Virtual time needs TCG: with `auto`, do not even probe KVM.
            wanted = "tcg" if spec.machine.timing == "virtual" and spec.machine.accel == "auto" else spec.machine.accel
            try:
                prep.accel = self.backend.accel(wanted, spec.arch, got.image)
                prep.rootfs = self.backend.rootfs(spec.arch)
                prep.tools = self.backend.tools(spec.arch)
                prep.host = self.backend.host_facts(spec.arch)
            except InputError:
                raise
            except HarnessError as e:
                prep.kernel_error = f"guest preparation failed: {e}"
                continue
            timing = spec.machine.timing
            if timing == "auto":
                timing = "virtual" if prep.accel.accel == "tcg" else "realtime"
            prep.timing = timing
            for what, path in (("root filesystem", prep.rootfs), ("tools directory", prep.tools)):
                if path is not None:
                    check_path(path, what)
        return out

    def _build(self, p: CellPlan, builds: dict[KernelRequest, BuildResult | str]) -> BuildResult | str:
        """The cell's kernel, each distinct one built (or taken from the cache) once; a failed
        build is the reason, for the cells that need it."""
        if p.request not in builds:
            self.console.print(f"kernel {p.request.label} ...", highlight=False)
            try:
                builds[p.request] = self.builder.build(p.request)
            except InputError:
                raise
            except HarnessError as e:
                builds[p.request] = f"kernel build failed: {e}"
        return builds[p.request]

    def _prepare_remote(self, p: CellPlan) -> Prepared:
        backend = self.backend_for(p.cell)
        prep = Prepared(target=p.cell.targets[0], timing=p.cell.targets[0].entry.clock)
        try:
            prep.accel = backend.accel("none", p.cell.spec.arch, Path("/nonexistent"))
            prep.tools = backend.tools(p.cell.spec.arch)
            prep.host = backend.host_facts(p.cell.spec.arch)
        except InputError:
            raise
        except HarnessError as e:
            prep.kernel_error = f"target preparation failed: {e}"
        return prep

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> list[CellOutcome]:
        plans = self.plan()
        prepared = self.prepare(plans)
        exp_sha = sha256_bytes(self.le.path.read_bytes())
        if self.run_dir.is_symlink():
            raise InputError(f"{self.run_dir} is a symbolic link: a run directory must be a directory of its own")
        self.results_root.mkdir(parents=True, exist_ok=True)
        try:
            self.run_dir.mkdir()
            created = True
        except FileExistsError:
            created = False
        started = False
        outcomes: list[CellOutcome] = []
        try:
            with _locked(self.run_dir):
                index = self._open_index(exp_sha)
                atomic_write_text(self.run_dir / records.EXPERIMENT_COPY, self.le.path.read_text())
                inv = records.Invocation(started=_now(), cells=[p.cell.id for p in plans], interrupted=True,
                                         jobs=self.jobs if self.jobs > 1 else None)
                index.invocations.append(inv)
                t0 = time.monotonic()
                self.progress = self._progress(plans, prepared)
                try:
                    fleet, pool = [], []
                    for i, p in enumerate(plans, 1):
                        if len(p.cell.targets) > 1:   # a fleet's cells run after the others, in parallel
                            fleet.append((i, p))
                            continue
                        if self.jobs > 1 and self._poolable(prepared[p.cell.id]):
                            pool.append((i, p))
                            continue
                        self.progress.cell_start(i, p.cell.id)
                        started = True
                        try:
                            out = self.run_cell(p, prepared[p.cell.id])
                        finally:
                            self.progress.close()
                        self._done(out, index, outcomes)
                    if pool:
                        started = True
                        self._run_pool(pool, prepared, index, outcomes)
                    if fleet:
                        started = True
                        self._run_fleet(fleet, prepared, index, outcomes)
                    self._restore_targets()
                    inv.interrupted = False
                finally:   # interrupted or not, what ran is indexed and summarised
                    if inv.interrupted:
                        self._left_deployed()
                    inv.finished, inv.wall_s = _now(), round(time.monotonic() - t0, 1)
                    index.complete = (len(index.cells) == index.cells_total
                                      and all(e.status == "ok" for e in index.cells.values()))
                    records.write(self.run_dir / records.RUN_INDEX, index)
                    self.summarise()
        except InputError:   # refused before any cell ran: leave nothing this run made
            if created and not started:
                share.remove_tree(self.run_dir)
            raise
        return outcomes

    def _restore_targets(self) -> None:
        """Targets a cell's kernel was deployed to boot their own kernel again (inventory `restore`)."""
        for backend in list(self._target_backends.values()):
            finish = getattr(backend, "finish", None)
            if finish is not None and (said := finish()) is not None:
                self.console.print(Text(f"    restore: {said}"), highlight=False)

    def _left_deployed(self) -> None:
        """A stopped run does not wait for reboots: say which targets still run a harness kernel."""
        for name, backend in list(self._target_backends.items()):
            if getattr(getattr(backend, "deployer", None), "deployed", False):
                self.console.print(Text(f"    warning: {name} still runs a harness kernel (the run stopped before "
                                        "restoring it; the next run restores it, or reboot it yourself)"),
                                   highlight=False)

    def _done(self, out: CellOutcome, index: RunIndex, outcomes: list[CellOutcome]) -> None:
        """A finished cell: progress, its line, the run index (on the main thread only)."""
        ran = out.status == "ok" and out.record is not None
        self.progress.cell_done(out.cell.id, out.cell.spec.arch, out.record.cell_wall_s if ran else None)
        outcomes.append(out)
        color = {"ok": "green", "skipped": "cyan"}.get(out.status, "red")
        line = Text("    ")   # the reason may quote the guest: never markup
        if (out.cell.targets and len(out.cell.targets) > 1) or self.jobs > 1:
            line.append(f"{out.cell.id}: ")
        line.append(out.status, style=color)
        line.append(f": {out.reason}")
        self.console.print(line, highlight=False)
        self._index_cell(index, out)
        records.write(self.run_dir / records.RUN_INDEX, index)

    @staticmethod
    def _poolable(prep: Prepared) -> bool:
        """A local cell that may boot alongside others: one in virtual time (or one that fails
        before any boot, which costs nothing)."""
        return prep.target is None and (prep.kernel is None or bool(prep.kernel_error) or prep.timing == "virtual")

    def _run_pool(self, items: list[tuple[int, CellPlan]], prepared: dict[str, Prepared], index: RunIndex,
                  outcomes: list[CellOutcome]) -> None:
        """Local virtual-time cells, `jobs` guests at a time, in the plan's order."""
        q: queue.Queue = queue.Queue()
        for _, p in items:
            q.put(p)
        self.console.print(f"[jobs] {len(items)} cells, {self.jobs} guests at a time (virtual time)",
                           highlight=False, markup=False)
        self._drain([(q, None)] * min(self.jobs, len(items)), len(items), prepared, index, outcomes)

    def _run_fleet(self, items: list[tuple[int, CellPlan]], prepared: dict[str, Prepared], index: RunIndex,
                   outcomes: list[CellOutcome]) -> None:
        """Cells whose target is a fleet: one worker per member, each taking the next cell of its
        fleet when its last one ends (one cell per target at a time); records and the index are
        written by this thread as cells finish. Live progress per repeat is off here (cells overlap)."""
        groups: dict[tuple[str, ...], queue.Queue] = {}
        members: dict[tuple[str, ...], tuple[Target, ...]] = {}
        for _, p in items:
            key = tuple(t.name for t in p.cell.targets)
            groups.setdefault(key, queue.Queue()).put(p)
            members[key] = p.cell.targets
        names = ", ".join(f"{len(members[k])} targets ({', '.join(k)})" for k in groups)
        self.console.print(f"[fleet] {len(items)} cells over {names}", highlight=False, markup=False)
        self._drain([(q, t) for key, q in groups.items() for t in members[key]], len(items), prepared, index,
                    outcomes)

    def _drain(self, workers: list[tuple[queue.Queue, Target | None]], n: int, prepared: dict[str, Prepared],
               index: RunIndex, outcomes: list[CellOutcome]) -> None:
        """One thread per (queue, target) taking cells off its queue until it is empty; the results
        come back to this thread, which records them (records and the index have one writer)."""
        results: queue.Queue = queue.Queue()
        stop = threading.Event()   # the main thread is leaving: take no further cell

        def worker(q: queue.Queue, target: Target | None) -> None:
            while not stop.is_set() and procs.terminating() is None:
                try:
                    p = q.get_nowait()
                except queue.Empty:
                    return
                prep = dataclasses.replace(prepared[p.cell.id], target=target, in_fleet=True)
                try:
                    results.put(self.run_cell(p, prep))
                except BaseException as e:   # handed to the main thread, which raises it
                    results.put(e)
                    return

        threads = [threading.Thread(target=worker, args=(q, t), daemon=True,
                                    name=f"target-{t.name}" if t is not None else f"job-{k}")
                   for k, (q, t) in enumerate(workers)]
        for t in threads:
            t.start()
        try:
            for _ in range(n):
                while True:
                    try:
                        got = results.get(timeout=0.5)
                        break
                    except queue.Empty:
                        continue
                if isinstance(got, BaseException):
                    raise got
                self._done(got, index, outcomes)
        finally:
            # A signal or another cell's error: the others' guests got SIGTERM (procs) and their
            # cells raise Terminated rather than record a failure; wait for them to stop writing.
            stop.set()
            deadline = time.monotonic() + procs.DEFAULT_GRACE_S + 5
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def _progress(self, plans: list[CellPlan], prepared: dict[str, Prepared]) -> RunProgress:
        """The cells that will boot a guest (not skipped, kernel built) and the earlier wall times to
        estimate them from, read before any of this run's cells replaces its record."""
        todo = []
        for p in plans:
            prep = prepared[p.cell.id]
            key = prep.kernel.key if prep.kernel is not None else None
            if p.cell.targets:
                key = self._remote_key(p, key)
            if (key is not None and not prep.kernel_error
                    and self.resumable(p, self.fingerprint(p, key, prep.tools.name)) is None):
                todo.append((p.cell.id, p.cell.spec.arch))
        known, _ = eta.history(self.run_dir, self.le.experiment.name)
        return RunProgress(self.console, len(plans), todo, known, self.le.experiment.repeats,
                           interval=self.progress_interval)

    def preview(self, kernel_key_of, tools_name_of) -> tuple[list[CellPreview], Path | None]:
        """Each cell's fate in a run started now, and the directory the estimates come from.
        `kernel_key_of(request)`: the build key of a kernel already in the cache, else None (its
        fingerprint cannot be known without building); `tools_name_of(arch)`: the workload's name."""
        plans = self.plan()
        known, source = eta.history(self.run_dir, self.le.experiment.name)
        out = []
        for p in plans:
            key = None if p.cell.targets and not p.cell.deploys else kernel_key_of(p.request)   # a target's own kernel
            if p.cell.targets:
                key = self._remote_key(p, key)
            prev = self._previous(self.run_dir / p.cell.id)
            if prev is None:
                action, why = "run", "no record"
            elif self.redo:
                action, why = "run", "--redo"
            elif prev.status == "ok" and key is None:
                action, why = "unknown", "ok record, but the kernel is not built: the fingerprint needs its build key"
            elif key is not None and self.resumable(p, self.fingerprint(p, key, tools_name_of(p.cell.spec.arch))):
                action, why = "resume", "ok record with the same fingerprint"
            else:
                action, why = "run", (f"record {prev.status}" if prev.status != "ok" else
                                      "ok record of another fingerprint (spec, kernel, workload or script changed)")
            est = None if action == "resume" else eta.estimate([(p.cell.id, p.cell.spec.arch)], known)[0]
            out.append(CellPreview(p.cell.id, p.cell.spec.arch, action, why, est))
        return out, source

    @staticmethod
    def _remote_key(p: CellPlan, build_key: str | None = None) -> str | None:
        """What stands for the kernel in a remote cell's fingerprint: machine.target as written (a
        fleet's cell resumes whichever member ran it), and the deployed build's key (None: a
        deploying cell whose kernel is not built yet, so its fingerprint cannot be known)."""
        if not p.cell.targets or (p.cell.deploys and build_key is None):
            return None
        entry = p.cell.targets[0].entry   # a fleet's members agree on deploy and clock (the loader checks)
        key = f"target:{p.cell.spec.machine.target}"
        if entry.clock != "realtime":
            key += f":clock={entry.clock}"
        if p.cell.deploys:   # the build, and the target's part of its command line
            key += f":{build_key}:" + ",".join(entry.cmdline)
        return key

    def fingerprint(self, p: CellPlan, kernel_key: str, tools_name: str) -> str:
        """What an ok record must have been made from for the cell to be skipped."""
        spec = p.cell.spec.model_dump(mode="json")
        if spec["machine"].get("target") is None:   # a VM cell's fingerprint is what it was before targets
            spec["machine"].pop("target", None)
        if spec["platform"].get("sched_ext") is None:   # and before sched_ext: earlier records still resume
            spec["platform"].pop("sched_ext", None)
        if spec["workload"].get("units_for") is None:   # and before units_for
            spec["workload"].pop("units_for", None)
        return sha256_json({"spec": spec, "kernel": kernel_key,
                            "workload": tools_name, "script": p.script, "probes": p.probe_scripts,
                            "backend": self.backend_for(p.cell).name})

    def resumable(self, p: CellPlan, fingerprint: str) -> CellResult | None:
        """The cell's ok record made from `fingerprint` (self.fingerprint), which a run keeps instead
        of running the cell again (None: the cell runs; always None with `redo`)."""
        if self.redo or (prev := self._previous(self.run_dir / p.cell.id)) is None:
            return None
        return prev if prev.status == "ok" and prev.fingerprint == fingerprint else None

    def _open_index(self, exp_sha: str) -> RunIndex:
        path = self.run_dir / records.RUN_INDEX
        if path.exists():
            try:
                index = records.read(path, RunIndex)
            except records.RecordError as e:
                self.console.print(f"[yellow]warning[/]: {e}: starting a new index", highlight=False)
            else:
                if index.experiment_sha256 != exp_sha:
                    raise InputError(f"{self.run_dir} holds results of another version of {self.le.path.name} "
                                     "(its experiment file differs): pick another --run-id")
                index.cells_total = len(self.le.cells)
                return index
        return RunIndex(experiment=self.le.experiment.name, run_id=self.run_dir.name, experiment_sha256=exp_sha,
                        cells_total=len(self.le.cells))

    @staticmethod
    def _index_cell(index: RunIndex, out: CellOutcome) -> None:
        rec = out.record
        if rec is None:
            return
        index.cells[out.cell.id] = records.CellEntry(arch=rec.arch, variant=rec.variant, axes=rec.axes,
                                                     status=rec.status, reason=rec.reason, finished=rec.finished)

    def summarise(self) -> None:
        """The run's summary and plot, from the records on disk (the same path as `report`)."""
        try:
            rep = report.write_run_report(self.run_dir)
        except Exception as e:   # a summary must never turn a finished run into a crash
            self.console.print(f"[yellow]warning[/]: summary not written: {e}", highlight=False)
            return
        if rep.table is not None:
            self.console.print(rep.table)
        for line in rep.notes:
            self.console.print(line, highlight=False, markup=False)
        self.console.print(f"results: {self.run_dir}", highlight=False)

    # -- one cell --------------------------------------------------------------------------------
    def _base_record(self, p: CellPlan, **kw) -> dict:
        c = p.cell
        return dict(experiment=self.le.experiment.name, run_id=self.run_dir.name, cell=c.id, arch=c.spec.arch,
                    variant=c.variant, axes=c.axes, spec=c.spec.model_dump(mode="json"),
                    repeats=self.le.experiment.repeats, probes_pending=p.probes_pending, **kw)

    def run_cell(self, p: CellPlan, prep: Prepared) -> CellOutcome:
        """One cell; whatever happened, the share keeps no device, FIFO, link or set-id file."""
        try:
            return self._run_cell(p, prep)
        finally:
            share_dir = self.run_dir / p.cell.id / protocol.SHARE
            if share_dir.is_dir() and not share_dir.is_symlink():
                for what in share.neutralise(share_dir):
                    self.console.print(f"    share: {what}", highlight=False, markup=False)

    @staticmethod
    def _check_terminating() -> None:
        """For worker threads (the main thread gets Terminated from the signal itself): the harness
        is stopping, so the cell ends here, before it deletes or records anything."""
        if (sig := procs.terminating()) is not None:
            raise procs.Terminated(sig)

    def _run_cell(self, p: CellPlan, prep: Prepared) -> CellOutcome:
        cell, spec = p.cell, p.cell.spec
        d = self.run_dir / cell.id
        t_cell = time.monotonic()
        if prep.target is not None:
            return self._run_remote_cell(p, prep, d, t_cell)
        if prep.kernel is None or prep.kernel_error:   # no kernel, or no rootfs/workload/accelerator for it
            return self._fail(p, d, "kernel-build" if prep.kernel is None else "boot-failed", prep.kernel_error)
        build = prep.kernel
        kernel, missing = self._kernel_info(p, build)
        if missing:
            return self._fail(p, d, "probe-failed", missing, kernel=kernel)
        scx = None
        if (name := spec.platform.sched_ext) is not None and (scx := build.sched_ext(name)) is None:
            return self._fail(p, d, "kernel-build", f"platform.sched_ext {name}: the kernel build {build.key} has "
                              "no sched_ext schedulers (CONFIG_SCHED_CLASS_EXT off, or built before the harness "
                              "built them: remove that build from the cache)", kernel=kernel)
        fingerprint = self.fingerprint(p, build.key, prep.tools.name)
        if (prev := self.resumable(p, fingerprint)) is not None:
            return CellOutcome(cell, "skipped", "results exist (use --redo to run again)", d, prev)
        self._check_terminating()
        share.remove_tree(d)
        d.mkdir(parents=True)
        atomic_write_text(d / records.GUEST_SCRIPT_COPY, p.script)
        if p.probes_pending:
            self.console.print(f"    [yellow]warning[/]: probes not implemented yet, not run: "
                               f"{', '.join(p.probes_pending)}", highlight=False)
        cmdline = list(spec.machine.cmdline) + p.platform.cmdline
        cfg = GuestConfig(arch=spec.arch, image=build.image, cpus=spec.machine.cpus, memory=spec.machine.memory,
                          accel=prep.accel.accel, timing=prep.timing, icount_shift=spec.machine.icount_shift,
                          arm64_cpu=spec.machine.arm64_cpu, cmdline=tuple(cmdline), root=prep.rootfs,
                          tools_dir=prep.tools)
        share_dir = d / protocol.SHARE
        attempts: list[records.Attempt] = []
        res: GuestResult | None = None
        for attempt in range(INFRA_RETRIES + 1):
            mode = f"{prep.accel.accel}, {'virtual time' if prep.timing == 'virtual' else 'real time'}"
            who = f"{cell.id}: " if prep.in_fleet else ""
            self.console.print(f"    {who}boot + run ({mode}), attempt {attempt + 1} ...", highlight=False)
            self._fill_share(p, share_dir, scx)
            with contextlib.ExitStack() as stack:   # a fresh scratch filesystem per boot
                if spec.workload.phases.disk_mb:
                    image = stack.enter_context(self.backend.scratch(spec.workload.phases.disk_mb))
                    cfg = dataclasses.replace(cfg, disks=(image,))
                if self.progress is not None and not prep.in_fleet:   # the guest's repeats as it reports them
                    stack.enter_context(StatusWatch(share_dir, self.le.experiment.repeats, self.progress.guest_event,
                                                    self.progress.tick, self.poll_s))
                res = self.backend.run(cfg, share_dir, protocol.guest_command(), spec.machine.run_timeout_s,
                                       d / records.console_log(attempt), spec.machine.boot_timeout_s)
            self._check_terminating()   # a guest the stop killed is no result, nor a failure of the cell
            attempts.append(records.Attempt(outcome=res.outcome, reason=res.reason, console=res.console_log.name,
                                            wall_s=round(res.wall_s, 1), command=list(res.command)))
            if not res.infrastructure:
                break
        guest = records.GuestInfo(
            backend=self.backend.name, accel=prep.accel.accel, accel_reason=prep.accel.reason, timing=prep.timing,
            timing_label=_timing_label(prep.timing, prep.accel.accel),
            cpu_model=(spec.machine.arm64_cpu if spec.arch == "arm64" and prep.accel.accel == "tcg"
                       else ("host" if prep.accel.accel == "kvm" else X86_TCG_CPU)),
            host=prep.host, rootfs=str(prep.rootfs) if prep.rootfs else None, workload_dir=str(prep.tools),
            kernel_cmdline=cmdline, platform_requested=p.platform.applied,
            boot_to_workload_s=res.guest_uptime_at_start_s,
            boot_to_workload_wall_s=round(res.boot_wall_s, 1) if res.boot_wall_s is not None else None,
            status={k: share.excerpt(v, 200) for k, v in list(res.status.items())[:64]})
        # every attempt but a last one that got past the boot was an infrastructure failure
        base = dict(kernel=kernel, guest=guest, attempts=attempts, fingerprint=fingerprint,
                    infra_failures=len(attempts) - (0 if res.infrastructure else 1))
        if not res.ok:
            reason = res.reason
            if res.outcome == "probe-failed":   # bpftrace's own words name the missing symbol or tracepoint
                reason += f": {self._probe_error(share_dir, res.status.get(protocol.Key.PROBE_FAILED, ''))}"
            return self._fail(p, d, res.outcome, f"{reason} (console log: {res.console_log})", **base)
        return self._finish(p, d, share_dir, prep, res, base, t_cell)

    def _finish(self, p: CellPlan, d: Path, share_dir: Path, prep: Prepared, res: GuestResult, base: dict,
                t_cell: float) -> CellOutcome:
        """Collect an ok guest's output and write the cell's ok record (or fail it: bad output)."""
        try:
            collected = self.collect(p, d, share_dir, prep.timing,
                                     facts=None if p.cell.simulated else res.facts)
        except Exception as e:   # everything collect reads is the guest's: no shape of it may stop the run
            why = str(e) if isinstance(e, (share.ShareError, ValueError)) else f"{type(e).__name__}: {e}"
            return self._fail(p, d, "output-unreadable", f"guest output unreadable: {share.excerpt(why, 400)}",
                              **base)
        if collected.get("platform_wrong"):
            return self._fail(p, d, "platform-failed", "platform-failed: " + "; ".join(collected["platform_wrong"]),
                              **base)
        collected.pop("platform_wrong", None)
        rec = CellResult(**self._base_record(p, status="ok", **base, **collected,
                                             cell_wall_s=round(time.monotonic() - t_cell, 1)))
        records.write(d / records.CELL_RESULT, rec)
        st = rec.stats
        boot = (f", boot-to-workload {res.guest_uptime_at_start_s:.1f}s guest / {res.boot_wall_s:.0f}s wall"
                if res.guest_uptime_at_start_s is not None and res.boot_wall_s is not None and not prep.target else
                f", connect + upload + setup {res.boot_wall_s:.0f}s" if res.boot_wall_s is not None else "")
        where = f" on {rec.target.name}" if rec.target else ""
        return CellOutcome(p.cell, "ok", f"{st.steps} steps{where}, wake p50 {st.wake_p50_us:.0f}us, "
                           f"step p50 {st.step_p50_us:.0f}us ({rec.cell_wall_s:.0f}s wall{boot})", d, rec)

    @staticmethod
    def _kernel_info(p: CellPlan, build: BuildResult) -> tuple[records.KernelInfo, str]:
        """The record's kernel, and why the cell's probes cannot attach to it ('' if they can)."""
        kernel = records.KernelInfo(key=build.key, request=p.request.label,
                                    release=build.metadata.get("kernel_release"), image=str(build.image))
        missing = probes.missing_symbols(p.probes, build.image.parent / "System.map")
        return kernel, "; ".join(f"probe {name}: {', '.join(syms)} not in this kernel's System.map (inlined, "
                                 "renamed or configured out): it cannot attach" for name, syms in missing.items())

    def _run_remote_cell(self, p: CellPlan, prep: Prepared, d: Path, t_cell: float) -> CellOutcome:
        """One cell on a remote target, on its own kernel or on the cell's deployed to it; one
        attempt (a target that cannot be reached or is lost fails the cell with the reason; the
        matrix goes on)."""
        cell, spec, t = p.cell, p.cell.spec, prep.target
        where = records.TargetInfo(name=t.name, url=t.address.url)
        if prep.kernel_error:
            kind = ("kernel-build" if cell.deploys and not prep.kernel_error.startswith("target preparation")
                    else "target-unusable")
            return self._fail(p, d, kind, prep.kernel_error, target=where)
        if spec.platform.sched_ext is not None:
            return self._fail(p, d, "target-unusable", "platform.sched_ext: not on remote targets yet (the "
                              "scheduler's loader is not uploaded; run it on the target yourself)", target=where)
        build, kernel, cmdline = prep.kernel, None, []
        if build is not None:   # kernel deploy: the cell's kernel, with the cell's parameters
            kernel, missing = self._kernel_info(p, build)
            if missing:
                return self._fail(p, d, "probe-failed", missing, kernel=kernel, target=where)
            cmdline = list(spec.machine.cmdline) + p.platform.cmdline
        backend = self.backend_for(cell, t)
        fingerprint = self.fingerprint(p, self._remote_key(p, build.key if build else None), prep.tools.name)
        if (prev := self.resumable(p, fingerprint)) is not None:
            return CellOutcome(cell, "skipped", "results exist (use --redo to run again)", d, prev)
        self._check_terminating()
        share.remove_tree(d)
        d.mkdir(parents=True)
        atomic_write_text(d / records.GUEST_SCRIPT_COPY, p.script)
        cfg = GuestConfig(arch=spec.arch, image=build.image if build else Path("/nonexistent"), cpus=spec.machine.cpus,
                          tools_dir=prep.tools, cmdline=tuple(cmdline), build_key=build.key if build else None,
                          release=kernel.release if kernel else None)
        share_dir = d / protocol.SHARE
        self.console.print(f"    run on {t.name} ({t.address.url}){' with kernel deploy' if build else ''} ...",
                           highlight=False)
        self._fill_share(p, share_dir)
        with contextlib.ExitStack() as stack:
            if self.progress is not None and not prep.in_fleet:
                stack.enter_context(StatusWatch(share_dir, self.le.experiment.repeats, self.progress.guest_event,
                                                self.progress.tick, self.poll_s))
            res = backend.run(cfg, share_dir, protocol.guest_command(), spec.machine.run_timeout_s,
                              d / records.console_log(0), spec.machine.boot_timeout_s)
        self._check_terminating()
        f = res.facts
        target = records.TargetInfo(
            name=t.name, url=t.address.url, fleet=spec.machine.target if len(cell.targets) > 1 else None,
            facts={k: share.excerpt(v, 200) for k, v in list(f.items())[:64]},
            **{k: (share.excerpt(f[k], 200) if k in f else None) for k in (
                "arch", "cpu_model", "board", "cpus", "kernel_release", "kernel_version", "cpufreq_driver",
                "cpufreq_governor", "cpuidle_driver", "cpuidle_governor", "cpuidle_states", "energy_source")})
        clock = (f"virtual time on {t.name} (QEMU -icount, as its inventory entry says)" if prep.timing == "virtual"
                 else f"real time on {t.name}")
        boot_line = (deploy.boot_cmdline(t, deploy.Kernel(build.image, build.key, kernel.release, tuple(cmdline)))
                     if build else [])
        guest = records.GuestInfo(
            backend=backend.name, accel="none", accel_reason=prep.accel.reason if prep.accel else "remote target",
            timing=prep.timing, timing_label=clock, cpu_model=target.cpu_model or "unknown",
            host=prep.host, workload_dir=str(prep.tools), kernel_cmdline=boot_line,
            platform_requested=p.platform.applied, boot_to_workload_s=None,
            boot_to_workload_wall_s=round(res.boot_wall_s, 1) if res.boot_wall_s is not None else None,
            status={k: share.excerpt(v, 200) for k, v in list(res.status.items())[:64]},
            platform="simulated" if cell.simulated else "real")
        attempts = [records.Attempt(outcome=res.outcome, reason=res.reason, console=res.console_log.name,
                                    wall_s=round(res.wall_s, 1), command=list(res.command))]
        base = dict(kernel=kernel, guest=guest, target=target, attempts=attempts, fingerprint=fingerprint)
        if not res.ok:
            reason = res.reason
            if res.outcome == "probe-failed":
                reason += f": {self._probe_error(share_dir, res.status.get(protocol.Key.PROBE_FAILED, ''))}"
            return self._fail(p, d, res.outcome, f"{reason} (console log: {res.console_log})", **base)
        return self._finish(p, d, share_dir, prep, res, base, t_cell)

    def _previous(self, d: Path) -> CellResult | None:
        try:
            return records.read(d / records.CELL_RESULT, CellResult)
        except records.RecordError:
            return None

    def _fill_share(self, p: CellPlan, share_dir: Path, sched_ext: Path | None = None) -> None:
        """An empty share with the host's inputs: whatever an earlier attempt's guest left is gone
        (`sched_ext`: the scheduler's loader, an executable the guest runs from there)."""
        share.reset(share_dir)
        inputs = {protocol.GUEST_SCRIPT: p.script.encode()}
        inputs.update({protocol.probe_script(name): text.encode() for name, text in p.probe_scripts.items()})
        if p.wait_file is not None:
            inputs[protocol.WAIT_FILE] = p.wait_file.read_bytes()   # the spec bounds its size
        if p.compute_file is not None:
            inputs[protocol.COMPUTE_FILE] = p.compute_file.read_bytes()
        if p.probe_scripts:
            (share_dir / protocol.PROBES_DIR).mkdir(mode=0o755)
        if sched_ext is not None:
            inputs[protocol.SCHED_EXT_BIN] = sched_ext.read_bytes()
        for name, data in inputs.items():
            with share.create_exclusive(share_dir / name) as fh:
                fh.write(data)
                if name == protocol.SCHED_EXT_BIN:
                    os.fchmod(fh.fileno(), 0o755)

    @staticmethod
    def _probe_error(share_dir: Path, name: str) -> str:
        if name not in probes.PROBES:
            return "bpftrace exited without a message"
        try:
            text = share.read_text_or_none(share_dir / protocol.probe_stderr(name), share.LIMIT_SMALL) or ""
        except share.ShareError as e:
            return f"its error output is unreadable ({e})"
        words = [w for w in text.split() if w != bpftrace_json.ATTACHED_NOTICE][:60]
        return share.excerpt(" ".join(words), 400) or "bpftrace exited without a message"

    # -- collect ---------------------------------------------------------------------------------
    def collect(self, p: CellPlan, d: Path, share_dir: Path, timing: str = "virtual",
                facts: dict[str, str] | None = None) -> dict:
        """What the guest wrote -> the record's measured parts (and host-side parsed files).
        `facts`: a remote target's (a real platform: its own energy counters, no simulated tables)."""
        spec, repeats = p.cell.spec, self.le.experiment.repeats
        runs = [protocol.repeat_files(r) for r in range(repeats)]
        raw = [self._steps(spec, share_dir, f, r) for r, f in enumerate(runs)]
        steps = steps_from_columns(raw)
        atomic_write_text(d / records.CELL_STEPS, to_parsed_csv(steps))
        stats = cell_stats(steps, **_stats_kind(spec.workload))
        texts = [(share.read_text(share_dir / f.before, share.LIMIT_SMALL),
                  share.read_text(share_dir / f.after, share.LIMIT_SMALL)) for f in runs]
        snaps = [(platform.parse_snapshot(b, f.before), platform.parse_snapshot(a, f.after))
                 for (b, a), f in zip(texts, runs, strict=True)]
        w = spec.workload
        metered = self._meter_texts(share_dir, runs)
        if metered is None:   # a recording from before the loop metered itself: whole repeats
            plat = platform.summarize([platform.delta(b, a) for b, a in snaps], w.agents * (w.steps + w.warmup),
                                      agent_cpu=w.agent_cpu)
            energy_texts, energy_steps = texts, w.agents * (w.steps + w.warmup)
        else:
            plat = platform.summarize([platform.delta(platform.parse_snapshot(b, f.meter_before),
                                                      platform.parse_snapshot(a, f.meter_after))
                                       for (b, a), f in zip(metered, runs, strict=True)],
                                      w.agents * w.steps, agent_cpu=w.agent_cpu)
            plat.meter = "steps"
            whole = w.agents * (w.steps + w.warmup)
            plat.repeat_energy_per_step_by_repeat_uj = [round(platform.delta(b, a).energy_uj / whole, 2)
                                                        for b, a in snaps] if facts is None else []
            energy_texts, energy_steps = metered, w.agents * w.steps
        if facts is None:
            wrong = platform.verify(spec.platform, spec.arch, snaps[0][0]) + platform.sched_ext_held(spec.platform,
                                                                                                    snaps)
            plat.frontier = cell_frontier(spec, steps, plat, timing)
        else:   # the guest script read every knob back; the energy is the target's own counters'
            wrong = []
            _real_energy(plat, [reading_for(facts, b, a) for b, a in energy_texts], energy_steps)
        out = {"stats": stats, "platform": plat, "platform_wrong": wrong}
        if spec.workload.abuser:
            out["abuser"] = neighbour.read(share_dir, spec.workload.abuser)
        if p.probes:
            out.update(self._probes(p, d, share_dir, raw, snaps, stats))
        return out

    @staticmethod
    def _meter_texts(share_dir: Path, runs: list[protocol.RunFiles]) -> list[tuple[str, str]] | None:
        """The loop's own meter readings of each run, or None when no run has them (a recording
        from an older loop). One run with them and another without is the guest's fault."""
        texts = [(share.read_text_or_none(share_dir / f.meter_before, share.LIMIT_SMALL),
                  share.read_text_or_none(share_dir / f.meter_after, share.LIMIT_SMALL)) for f in runs]
        if all(b is None and a is None for b, a in texts):
            return None
        for (b, a), f in zip(texts, runs, strict=True):
            if b is None or a is None:
                raise share.ShareError(f"{f.meter_before if b is None else f.meter_after}: missing (the loop "
                                       "meters every run)")
        return texts

    @staticmethod
    def _steps(spec, share_dir: Path, f: protocol.RunFiles, repeat: int) -> dict:
        """One run's steps file, read within what the spec can produce (a row is at most 9 numbers
        of 20 digits, 11 in the extended file) and checked to hold exactly the spec's measured steps."""
        w = spec.workload
        rows = (w.steps + w.warmup) * w.agents
        limit = min(share.LIMIT_STEPS, rows * (240 if w.extended_output() else 200) + 4096)
        cols = parse_steps_csv(share.read_text(share_dir / f.steps, limit), f.steps, repeat)
        if len(cols["step"]) != w.steps * w.agents:
            raise StepsFormatError(f"{f.steps}: {len(cols['step'])} measured steps, the spec asks for "
                                   f"{w.steps * w.agents}")
        return cols

    @staticmethod
    def _probe_limit(spec) -> int:
        """bpftrace output grows with the steps traced (a few lines per step, background events)."""
        w = spec.workload
        return min(share.LIMIT_PROBE, 64 * share.MIB + (w.steps + w.warmup) * w.agents * 16 * share.KIB)

    def _probes(self, p: CellPlan, d: Path, share_dir: Path, raw, snaps, stats) -> dict:
        """Parse each probe's output against the loop run it traced. With a separate probed run,
        that run (repeat 0's seed) against repeat 0 is the probes' overhead."""
        out: dict = {}
        if p.cell.spec.probe_run == "separate":
            f = protocol.PROBED_FILES
            probed_raw = [self._steps(p.cell.spec, share_dir, f, 0)]
            probed_steps = steps_from_columns(probed_raw)
            atomic_write_text(d / records.CELL_PROBED_STEPS, to_parsed_csv(probed_steps))
            cur_khz = platform.parse_snapshot(share.read_text(share_dir / f.before, share.LIMIT_SMALL),
                                              f.before).cur_khz
            kind = _stats_kind(p.cell.spec.workload)
            probed, first = cell_stats(probed_steps, **kind), cell_stats(steps_from_columns(raw[:1]), **kind)
            out["probed_run"] = probed
            out["probe_overhead"] = {q: getattr(probed, f"step_{q}_us") / getattr(first, f"step_{q}_us") - 1
                                     for q in ("p50", "p99") if getattr(first, f"step_{q}_us") > 0}
            traced = probed_raw
        else:
            traced, cur_khz = raw, snaps[0][0].cur_khz
        ctx = ProbeContext(cur_khz=cur_khz,   # per-CPU policies: policy N is cpu N
                           loop=LoopTimeline.from_columns({k: np.concatenate([c[k] for c in traced])
                                                           for k in traced[0]}),
                           files=protocol.read_file_index(share_dir))
        summaries = {}
        for name in p.probes:
            tool = probes.get(name)
            name_out = protocol.probe_output(name)
            text = share.read_text(share_dir / name_out, self._probe_limit(p.cell.spec))
            try:
                recs = tool.records(bpftrace_json.parse(text, name_out), ctx)
                summaries[name] = tool.summary(recs, ctx)
            except bpftrace_json.ProbeOutputError as e:
                raise ValueError(f"probe {name}: {e}") from None
            except Exception as e:   # any shape of output the parser did not expect
                raise ValueError(f"probe {name}: malformed output ({type(e).__name__})") from None
            atomic_write_text(d / records.probe_records(name), tool.to_csv(recs))
        out["probes"] = summaries
        if decompose.applies(p.cell.spec):   # an analysis of stored data: it never fails the cell
            try:
                parts, out["decomposition"] = decompose.from_share(share_dir, p.cell.spec, self.le.experiment.repeats,
                                                                   self._probe_limit(p.cell.spec))
            except Exception as e:
                self.console.print(f"    decomposition not made ({type(e).__name__}: {share.excerpt(str(e), 200)}); "
                                   "python -m harness decompose can try again", highlight=False, markup=False)
            else:
                atomic_write_text(d / records.CELL_DECOMPOSITION, decompose.to_csv(parts))
        return out

    def _fail(self, p: CellPlan, d: Path, failure: str, reason: str, **kw) -> CellOutcome:
        d.mkdir(parents=True, exist_ok=True)
        rec = CellResult(**self._base_record(p, status="failed", failure=failure, reason=reason, **kw))
        records.write(d / records.CELL_RESULT, rec)
        return CellOutcome(p.cell, "failed", reason, d, rec)


def _deploy_problem(build: BuildResult) -> str | None:
    """Why a build cannot be deployed by kexec to a target, or None. The cell's kernel runs the next
    deploy (or the target's own kernel again), so it must have kexec itself."""
    try:
        text = build.config.read_text(errors="replace")
    except OSError as e:
        return f"kernel build {build.key}: its config is unreadable ({e})"
    if not re.search(r"^CONFIG_KEXEC=y$", text, re.M):   # kexec -l's kexec_load (kexec-tools 2.0.25's default)
        return (f"kernel build {build.key} has no kexec (CONFIG_KEXEC): a target with `deploy: kexec` could not "
                "move on from it to the next cell's kernel (add the testbox fragment, or one like it for the board)")
    return None


def _real_energy(plat: records.PlatformSummary, readings, steps_per_repeat: int) -> None:
    """A real target's energy in place of the simulated meter's (which it has not): None, never
    0, where it has no sensor."""
    got = [r for r in readings if r.energy_uj is not None]
    plat.energy_source = readings[0].source if readings and len(got) == len(readings) else "none"
    plat.energy_domains = list(readings[0].domains) if got else []
    plat.agent_energy_per_step_by_repeat_uj = []
    if plat.energy_source == "none":
        plat.energy_uj, plat.energy_per_step_uj, plat.avg_power_mw = 0, None, None
        plat.energy_per_step_by_repeat_uj = []
        return
    total = sum(r.energy_uj for r in got)
    steps = steps_per_repeat * len(got)
    plat.energy_uj = total
    plat.energy_per_step_uj = round(total / steps, 1) if steps else None
    plat.energy_per_step_by_repeat_uj = [round(r.energy_uj / steps_per_repeat, 2) if steps_per_repeat else 0.0
                                         for r in got]
    plat.avg_power_mw = round(total / plat.elapsed_s / 1e3, 1) if plat.elapsed_s > 0 else None


def _stats_kind(w) -> dict[str, bool]:
    """What the cell's statistics count besides latencies: deadline misses, fan-in."""
    return {"deadlines": w.wait.period_us is not None, "fanout": w.fanout}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _timing_label(timing: str, accel: str) -> str:
    if timing == "virtual":
        return "QEMU virtual time (-icount): guest time counts instructions"
    if accel == "tcg":
        return "TCG real time: guest compute dilated ~30x vs wall-clock delays"
    return "KVM real time"


@contextlib.contextmanager
def _locked(run_dir: Path):
    """An exclusive lock on the run directory for one invocation; a second one exits 2 at once."""
    fd = os.open(run_dir / records.RUN_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{run_dir} is in use by another `harness run` (lock {records.RUN_LOCK}); "
                             "wait for it or pick another --run-id") from None
        yield
    finally:
        os.close(fd)
