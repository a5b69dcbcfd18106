"""`python -m harness run`: every cell of an experiment, built, booted, run and parsed.

Each cell is isolated: a build failure, a kernel panic, a hang or a crashing workload marks
that cell failed (with its reason and console log) and the next cell runs. A guest that dies
before the workload starts is retried (`INFRA_RETRIES`) and every retry is counted as an
infrastructure failure in the cell's result. A cell whose result.json says "ok" is skipped
when the same run is started again, unless `redo` is set.

Layout: <results>/<run-id>/{experiment.yaml, run.json, summary.txt, latency_cdf.png,
<cell-id>/{result.json, steps.csv, steps-r*.csv, console.log, guest.sh, ...}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from harness import probes
from harness.analysis import report
from harness.analysis.steps import StepsFormatError, cell_stats, load_steps, read_steps_csv
from harness.errors import HarnessError, InputError
from harness.guest import accel as accelmod
from harness.guest import platform
from harness.guest.rootfs import ensure_rootfs
from harness.guest.scratch import scratch_disk
from harness.guest.vm import X86_TCG_CPU, GuestConfig, run_guest
from harness.kernel.build import KernelBuilder, KernelRequest
from harness.kernel.cache import BuildCache, atomic_write_text, sha256_bytes, sha256_json
from harness.probes import bpftrace_json
from harness.probes.context import LoopTimeline, ProbeContext
from harness.spec.loader import Cell, LoadedExperiment
from harness.workload import guest_script
from harness.workload.build import workload_dir

INFRA_RETRIES = 2


@dataclass
class CellOutcome:
    cell: Cell
    status: str                  # ok | failed | skipped (already done)
    reason: str = ""
    dir: Path | None = None
    stats: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def run_id_for(le: LoadedExperiment) -> str:
    """Stable per experiment content: running the same file again resumes the same run."""
    return f"{le.experiment.name}-{sha256_bytes(le.path.read_bytes())[:8]}"


class Runner:
    def __init__(self, le: LoadedExperiment, results_root: Path, run_id: str | None = None, redo: bool = False,
                 cache: BuildCache | None = None, console: Console | None = None, only: list[str] | None = None):
        self.le = le
        self.cache = cache or BuildCache()
        self.builder = KernelBuilder(self.cache, console=Console(stderr=True))
        self.run_dir = results_root / (run_id or run_id_for(le))
        self.redo = redo
        self.console = console or Console()
        self.only = only

    def cells(self) -> list[Cell]:
        if not self.only:
            return self.le.cells
        picked = [c for c in self.le.cells if any(pat in c.id for pat in self.only)]
        if not picked:
            raise InputError(f"no cell id contains any of {self.only}")
        return picked

    def run(self) -> list[CellOutcome]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.le.path, self.run_dir / "experiment.yaml")
        started = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        cells = self.cells()
        outcomes: list[CellOutcome] = []
        try:
            for i, cell in enumerate(cells, 1):
                self.console.print(f"[bold][{i}/{len(cells)}][/] {cell.id}", highlight=False)
                try:
                    out = self.run_cell(cell)
                except InputError:
                    raise
                except HarnessError as e:
                    out = self._fail(cell, self.run_dir / cell.id, f"{e}")
                outcomes.append(out)
                color = {"ok": "green", "skipped": "cyan"}.get(out.status, "red")
                self.console.print(f"    [{color}]{out.status}[/]: {out.reason}", highlight=False)
        finally:   # interrupted or not, what ran is summarised
            self.report(outcomes)
            atomic_write_text(self.run_dir / "run.json", json.dumps({
                "experiment": self.le.experiment.name, "run_id": self.run_dir.name,
                "started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
                "wall_s": round(time.monotonic() - t0, 1), "complete": len(outcomes) == len(cells),
                "cells": {o.cell.id: o.status for o in outcomes},
            }, indent=2) + "\n")
        return outcomes

    def report(self, outcomes: list[CellOutcome]) -> None:
        """Summary of every cell of the run directory: this invocation's, and earlier ones' on disk."""
        latest = {o.cell.id: o for o in outcomes}
        rows, series = [], {}
        for cell in self.le.cells:
            d = self.run_dir / cell.id
            if cell.id in latest:
                o = latest[cell.id]
                meta, status, reason, stats = o.meta, ("ok" if o.status == "skipped" else o.status), o.reason, o.stats
            elif (d / "result.json").is_file():
                meta = json.loads((d / "result.json").read_text())
                status, reason, stats = meta.get("status", "?"), meta.get("reason", ""), meta.get("stats", {})
            else:
                continue
            rows.append({"cell": cell.id, "status": status, "reason": reason, "accel": meta.get("accel", "-"),
                         "timing": meta.get("timing", "-"), "stats": stats})
            if status == "ok" and (d / "steps.csv").is_file():
                series[cell.id] = _read_parsed(d / "steps.csv")
        if not rows:
            return
        title = f"{self.le.experiment.name} ({self.run_dir.name})"
        self.console.print(report.summary_table(rows, title))
        atomic_write_text(self.run_dir / "summary.txt", report.summary_text(rows))
        if series:
            png = report.latency_cdf(series, self.run_dir / "latency_cdf.png", title)
            self.console.print(f"plot: {png}")
        self.console.print(f"results: {self.run_dir}")

    # -- one cell ------------------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> CellOutcome:
        d = self.run_dir / cell.id
        spec = cell.spec
        t_cell = time.monotonic()
        self.console.print("    kernel ...", highlight=False)
        req = KernelRequest.from_spec(spec.kernel, spec.arch, self.le.path.resolve().parent)
        try:
            build = self.builder.build(req)
        except HarnessError as e:
            return self._fail(cell, d, f"kernel build failed: {e}")
        tools = workload_dir(self.cache, spec.arch)
        plat = platform.plan(spec.platform, spec.arch)
        probe_names = [p for p in spec.probes if p in probes.PROBES]
        probes_pending = [p for p in spec.probes if p not in probes.PROBES]
        script = guest_script.render(spec.workload, self.le.experiment.repeats, setup=plat.setup,
                                     extra_args=plat.workload_args, probes=probe_names, probe_run=spec.probe_run,
                                     cpus=spec.machine.cpus)
        missing = probes.missing_symbols(probe_names, build.image.parent / "System.map")
        if missing:
            return self._fail(cell, d, "probe-failed: " + "; ".join(
                f"probe {name}: {', '.join(syms)} not in this kernel's System.map (inlined, renamed or "
                "configured out): it cannot attach" for name, syms in missing.items()))
        # Same spec, kernel, workload binary and guest script: the stored result still stands.
        probe_scripts = {name: probes.render(name) for name in probe_names}
        fingerprint = sha256_json({"spec": spec.model_dump(mode="json"), "kernel": build.key,
                                   "workload": tools.name, "script": script, "probes": probe_scripts})
        done = d / "result.json"
        if done.is_file() and not self.redo:
            prev = json.loads(done.read_text())
            if prev.get("status") == "ok" and prev.get("fingerprint") == fingerprint:
                return CellOutcome(cell, "skipped", "results exist (use --redo to run again)", d,
                                   prev.get("stats", {}), prev)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for name, text in probe_scripts.items():
            (d / guest_script.PROBES_DIR).mkdir(exist_ok=True)
            (d / guest_script.PROBES_DIR / f"{name}.bt").write_text(text)
        if spec.workload.wait.file:
            wf = Path(spec.workload.wait.file)
            shutil.copy(wf if wf.is_absolute() else self.le.path.resolve().parent / wf, d / guest_script.WAIT_FILE)
        root = ensure_rootfs(self.cache, spec.arch) if spec.arch == "arm64" else None
        # Virtual time needs TCG: with `auto`, do not even probe KVM.
        wanted = "tcg" if spec.machine.timing == "virtual" and spec.machine.accel == "auto" else spec.machine.accel
        choice = accelmod.resolve(wanted, spec.arch, build.image, self.cache)
        timing = spec.machine.timing
        if timing == "auto":
            timing = "virtual" if choice.accel == "tcg" else "realtime"
        if timing == "virtual" and choice.accel == "kvm":
            raise InputError(f"{cell.id}: timing 'virtual' needs TCG but the guest runs under KVM")
        if probes_pending:
            self.console.print(f"    [yellow]warning[/]: probes not implemented yet, not run: "
                               f"{', '.join(probes_pending)}", highlight=False)
        cmdline = list(spec.machine.cmdline) + plat.cmdline
        cfg = GuestConfig(arch=spec.arch, image=build.image, cpus=spec.machine.cpus, memory=spec.machine.memory,
                          accel=choice.accel, timing=timing, icount_shift=spec.machine.icount_shift,
                          arm64_cpu=spec.machine.arm64_cpu, cmdline=tuple(cmdline), root=root, tools_dir=tools)
        (d / "guest.sh").write_text(script)

        attempts, infra = [], 0
        for attempt in range(INFRA_RETRIES + 1):
            mode = f"{choice.accel}, {'virtual time' if timing == 'virtual' else 'real time'}"
            self.console.print(f"    boot + run ({mode}), attempt {attempt + 1} ...", highlight=False)
            with contextlib.ExitStack() as stack:   # a fresh scratch filesystem per boot
                if spec.workload.phases.disk_mb:
                    image = stack.enter_context(scratch_disk(self.cache.root / "tmp", spec.workload.phases.disk_mb))
                    cfg = dataclasses.replace(cfg, disks=(image,))
                res = run_guest(cfg, d, f"sh {guest_script.GUEST_RESULTS}/guest.sh", spec.machine.run_timeout_s,
                                console_name=f"console-{attempt}.log" if attempt else "console.log",
                                boot_timeout_s=spec.machine.boot_timeout_s)
            attempts.append({"outcome": res.outcome, "reason": res.reason, "console": res.console_log.name,
                             "wall_s": round(res.wall_s, 1)})
            if not res.infrastructure:
                break
            infra += 1
        meta = {
            "cell": cell.id, "variant": cell.variant, "axes": cell.axes, "spec": spec.model_dump(mode="json"),
            "fingerprint": fingerprint,
            "experiment": self.le.experiment.name, "repeats": self.le.experiment.repeats,
            "kernel": {"key": build.key, "request": req.label, "release": build.metadata.get("kernel_release"),
                       "image": str(build.image)},
            "accel": choice.accel, "accel_reason": choice.reason, "timing": timing,
            "guest_cpu_model": spec.machine.arm64_cpu if spec.arch == "arm64" and choice.accel == "tcg"
            else ("host" if choice.accel == "kvm" else X86_TCG_CPU),
            "timing_label": "QEMU virtual time (-icount): guest time counts instructions" if timing == "virtual"
            else ("TCG real time: guest compute dilated ~30x vs wall-clock delays" if choice.accel == "tcg"
                  else "KVM real time"),
            "host": accelmod.host_facts(spec.arch), "workload_dir": str(tools), "rootfs": str(root) if root else None,
            "platform_requested": plat.applied, "kernel_cmdline": cmdline,
            "probes_run": probe_names, "probes_pending": probes_pending,
            "attempts": attempts, "infra_failures": infra,
            "boot_to_workload_s": res.guest_uptime_at_start_s,
            "boot_to_workload_wall_s": round(res.boot_wall_s, 1) if res.boot_wall_s is not None else None,
            "guest_status": res.status,
            "cell_wall_s": round(time.monotonic() - t_cell, 1),
            "finished": dt.datetime.now(dt.UTC).isoformat(),
        }
        if not res.ok:
            reason = res.reason
            if res.outcome == "probe-failed":   # bpftrace's own words name the missing symbol or tracepoint
                err = d / f"probe-{res.status['probe_failed']}.err"
                said = " ".join(err.read_text(errors="replace").split()[:60]) if err.is_file() else ""
                reason += f": {said or 'bpftrace exited without a message'}"
            return self._fail(cell, d, f"{res.outcome}: {reason} (console log: {res.console_log})", meta)
        try:
            steps = load_steps([d / f"steps-r{r}.csv" for r in range(self.le.experiment.repeats)])
        except (OSError, StepsFormatError) as e:
            return self._fail(cell, d, f"workload output unreadable: {e}", meta)
        _write_steps(d / "steps.csv", steps)
        stats = cell_stats(steps).as_dict()
        try:
            snaps = [(platform.read_snapshot(d / f"platform-r{r}-before.txt"),
                      platform.read_snapshot(d / f"platform-r{r}-after.txt"))
                     for r in range(self.le.experiment.repeats)]
        except (OSError, ValueError) as e:
            return self._fail(cell, d, f"platform snapshot unreadable: {e}", meta)
        wrong = platform.verify(spec.platform, spec.arch, snaps[0][0])
        if wrong:
            return self._fail(cell, d, "platform-failed: " + "; ".join(wrong), meta)
        w = spec.workload   # energy covers whole repeats: warm-up steps included
        meta["platform"] = platform.summarize([platform.delta(b, a) for b, a in snaps],
                                              self.le.experiment.repeats * w.agents * (w.steps + w.warmup))
        stats.update({k: meta["platform"][k] for k in ("energy_per_step_uj", "avg_power_mw")})
        try:
            probe_stats = self._probe_stats(spec, d, probe_names, snaps, stats, meta)
        except (OSError, ValueError, StepsFormatError) as e:
            return self._fail(cell, d, f"probe output unreadable: {e}", meta)
        meta.update({"status": "ok", "reason": "", "stats": stats, "probes": probe_stats})
        atomic_write_text(d / "result.json", json.dumps(meta, indent=2) + "\n")
        boot = (f", boot-to-workload {res.guest_uptime_at_start_s:.1f}s guest / {res.boot_wall_s:.0f}s wall"
                if res.guest_uptime_at_start_s is not None and res.boot_wall_s is not None else "")
        return CellOutcome(cell, "ok", f"{stats['steps']} steps, wake p50 {stats['wake_p50_us']:.0f}us, "
                           f"step p50 {stats['step_p50_us']:.0f}us ({meta['cell_wall_s']:.0f}s wall{boot})",
                           d, stats, meta)

    def _probe_stats(self, spec, d: Path, names: list[str], snaps, stats: dict, meta: dict) -> dict:
        """Parse each probe's output against the loop run it traced. With a separate probed run,
        that run (repeat 0's seed) against repeat 0 is the probes' overhead."""
        if not names:
            return {}
        if spec.probe_run == "separate":
            raw = [read_steps_csv(d / guest_script.PROBED_STEPS, 0)]
            cur_khz = platform.read_snapshot(d / "platform-probed-before.txt").cur_khz
            probed = cell_stats(load_steps([d / guest_script.PROBED_STEPS])).as_dict()
            first = cell_stats(load_steps([d / "steps-r0.csv"])).as_dict()
            meta["probed_run"] = probed
            for q in ("p50", "p99"):
                stats[f"probe_overhead_{q}"] = probed[f"step_{q}_us"] / first[f"step_{q}_us"] - 1
        else:
            raw = [read_steps_csv(d / f"steps-r{r}.csv", r) for r in range(self.le.experiment.repeats)]
            cur_khz = snaps[0][0].cur_khz
        ctx = ProbeContext(cur_khz=cur_khz,   # per-CPU policies: policy N is cpu N
                           loop=LoopTimeline.from_columns({k: np.concatenate([c[k] for c in raw]) for k in raw[0]}),
                           files=guest_script.read_file_index(d))
        out = {}
        for name in names:
            tool = probes.get(name)
            try:
                recs = tool.records(bpftrace_json.read(d / f"probe-{name}.json"), ctx)
            except bpftrace_json.ProbeOutputError as e:
                raise ValueError(f"probe {name}: {e}") from None
            atomic_write_text(d / f"probe-{name}.csv", tool.to_csv(recs))
            out[name] = tool.summary(recs, ctx)
        return out

    def _fail(self, cell: Cell, d: Path, reason: str, meta: dict | None = None) -> CellOutcome:
        d.mkdir(parents=True, exist_ok=True)
        meta = {**(meta or {"cell": cell.id, "variant": cell.variant}), "status": "failed", "reason": reason}
        atomic_write_text(d / "result.json", json.dumps(meta, indent=2) + "\n")
        return CellOutcome(cell, "failed", reason, d, {}, meta)


def _read_parsed(path: Path) -> dict[str, list[float]]:
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows] for k in ("step_us", "wake_us")}


def _write_steps(path: Path, s) -> None:
    """The parsed per-step data of a cell, one row per measured step, in microseconds."""
    lines = ["repeat,agent,step,wait_us,wake_us,step_us,compute_us,phases_us,cpu"]
    for row in zip(s.repeat, s.agent, s.step, s.wait_ns, s.wake_ns, s.step_ns, s.compute_ns, s.phases_ns, s.cpu,
                   strict=True):
        r, a, st, w, wk, sp, c, ph, cpu = (int(x) for x in row)
        lines.append(f"{r},{a},{st},{w / 1e3:.3f},{wk / 1e3:.3f},{sp / 1e3:.3f},{c / 1e3:.3f},{ph / 1e3:.3f},{cpu}")
    atomic_write_text(path, "\n".join(lines) + "\n")
