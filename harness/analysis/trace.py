"""One cell as a Chrome trace-event JSON: what `python -m harness trace RUN_DIR/CELL` writes, for the
Perfetto UI (ui.perfetto.dev, or its offline build) and chrome://tracing.

Layout (one boot runs every repeat of a cell, one after the other, on one guest clock):
- one process per run of the loop: "repeat N", and "traced run" when the probes had a run of their
  own (`probe_run: separate`); in it a thread per agent ("agent-N") with, per step, a "step" span
  (signal -> done) holding "wake" (signal -> the agent runs; split into signal -> sched_waking ->
  switch-in -> the loop's stamp where a probe saw that wakeup), "phases" and "compute", and a
  "wait" span between two steps; warm-up steps are "warm-up step" spans (the "step" spans are the
  measured ones, so they add up to steps.csv);
- a "repeat" thread with a span over the whole repeat (energy and residency in its args) and
  counter tracks: each CPU's idle-state residency over that repeat (sysfs snapshots: a mean, not a
  timeline);
- in the process of the run the probes traced: each CPU's requested frequency (dvfs_ramp's
  power:cpu_frequency events), the agent's runs on a CPU (dvfs_ramp), and the agent latency
  windows with placements and preemptions (agent_window).

Timestamps: the loop's own CLOCK_MONOTONIC stamps, which the guest wrote to its share
(`<cell>/guest/steps-r<N>.csv`) and bpftrace's nsecs share. steps.csv keeps durations only, so a
cell directory without its share (the committed examples) gets a timeline rebuilt from them, per
repeat from 0, and says so in its process names and metadata: the steps' own durations are exact,
the gaps between them are the nominal waits (the world thread's own wakeup latency is not in
steps.csv), and no kernel event can be placed against such a timeline.

`otherData` in the file says where the timeline comes from, which tracks it holds and which are
absent and why. Everything is read the way the rest of the harness reads a run directory: no link
followed, regular files only, size caps (harness/guest/share.py); a bad cell directory is an
InputError naming the path.
"""

from __future__ import annotations

import bisect
import json
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import records
from harness.analysis.steps import StepsFormatError, parse_steps_csv, read_parsed_csv
from harness.errors import InputError
from harness.guest import platform, protocol, share
from harness.kernel.cache import atomic_write_text
from harness.probes import agent_window, bpftrace_json, dvfs_ramp, wakeup_latency
from harness.probes.context import LoopTimeline, ProbeContext
from harness.records import CellResult

FORMAT = "agent-latency cell trace 1"
MAX_STEPS = 1_000_000          # about 9 events a step: a bigger cell makes a trace no viewer loads
DRAWN_PROBES = ("wakeup_latency", "dvfs_ramp", "agent_window")
TIMELINE_GUEST = "guest CLOCK_MONOTONIC"
TIMELINE_RECONSTRUCTED = "reconstructed from durations"
COLUMNS = ("agent", "step", "warmup", "wait_ns", "signal_ns", "wake_ns", "phases_ns", "done_ns", "cpu")


def _us(ns: int | float) -> float:
    """Trace-event time is microseconds. Perfetto turns a number into ns by multiplying by 1000
    and truncating (json_utils.cc CoerceToTs), so 1.568 us could come back as 1567 ns; a tenth of a
    ns more makes truncation and rounding both give the stamp the loop wrote."""
    return round(ns / 1000 + 1e-4, 4)


@dataclass
class _LoopRun:
    """One run of the loop: its stamps (ns, int64 columns of COLUMNS), warm-up rows included."""

    label: str
    pid: int
    repeat: int | None          # None: the traced run
    cols: dict[str, np.ndarray]
    snapshots: tuple[platform.Snapshot, platform.Snapshot] | None = None


@dataclass
class TraceSummary:
    path: Path
    timeline: str
    events: dict[str, int]                  # phase ("X", "C", "i", "M") -> count
    tracks: list[str]
    absent: dict[str, str]
    notes: list[str] = field(default_factory=list)


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.tracks: dict[str, None] = {}

    def process(self, pid: int, name: str) -> None:
        self.events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": pid * 1000, "args": {"name": name}})
        self.events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": pid * 1000,
                            "args": {"sort_index": pid}})

    def thread(self, pid: int, tid: int, name: str) -> None:
        self.events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        self.events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                            "args": {"sort_index": tid - pid * 1000}})

    def span(self, pid: int, tid: int, name: str, cat: str, start_ns: int, end_ns: int, args: dict | None = None):
        ev = {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": _us(start_ns),
              "dur": _us(max(0, end_ns - start_ns))}
        if args:
            ev["args"] = args
        self.events.append(ev)

    def instant(self, pid: int, tid: int, name: str, cat: str, ns: int, args: dict | None = None) -> None:
        ev = {"ph": "i", "s": "t", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": _us(ns)}
        if args:
            ev["args"] = args
        self.events.append(ev)

    def counter(self, pid: int, name: str, ns: int, values: dict[str, float]) -> None:
        self.events.append({"ph": "C", "name": name, "pid": pid, "tid": pid * 1000, "ts": _us(ns),
                            "args": values})
        for k in values:
            self.tracks[f"counter: {name} {k}"] = None


# -- reading the cell ------------------------------------------------------------------------------

def _real_dir(path: Path, what: str, missing_ok: bool = False) -> Path | None:
    """@path as a directory that is not a link (an InputError naming it otherwise); None if it is
    absent and @missing_ok."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise InputError(f"{path}: no such {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{path}: is a symbolic link (not followed): give the {what} itself")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: not a {what}")
    return path


def _cell_dir(path: Path) -> Path:
    return _real_dir(path, "cell directory (RUN_DIR/CELL)")


@dataclass(frozen=True)
class _Spec:
    """What the trace needs of the cell's spec (the record's dump of it)."""

    steps: int
    warmup: int
    agents: int
    probe_run: str


def _record(cell: Path) -> tuple[CellResult, _Spec]:
    if share.exists_regular(cell / records.RUN_INDEX):
        raise InputError(f"{cell}: a run directory; give one of its cells (RUN_DIR/CELL)")
    try:
        rec = records.read(cell / records.CELL_RESULT, CellResult)
    except records.RecordError as e:
        raise InputError(f"{cell}: not a usable cell directory: {e}") from None
    if rec.status != "ok":
        raise InputError(f"{cell}: the cell failed ({rec.failure}: {share.excerpt(rec.reason, 200)}): "
                         "it has no steps to trace")
    w = rec.spec.get("workload")
    try:
        spec = _Spec(*(int(w[k]) for k in ("steps", "warmup", "agents")), str(rec.spec.get("probe_run", "separate")))
    except (TypeError, KeyError, ValueError, OverflowError):
        raise InputError(f"{cell / records.CELL_RESULT}: spec.workload has no usable steps, warmup, agents") from None
    if min(spec.steps, spec.agents) < 1 or spec.warmup < 0:
        raise InputError(f"{cell / records.CELL_RESULT}: spec.workload: steps, warmup or agents out of range")
    return rec, spec


def _parsed(path: Path, required: bool = True) -> dict[str, np.ndarray] | None:
    if not required and not share.exists_regular(path) and not path.is_symlink():
        return None
    try:
        return read_parsed_csv(path)
    except StepsFormatError as e:
        raise InputError(f"{path.parent}: {e}") from None


def _share(cell: Path) -> Path | None:
    """The guest's share, if the cell directory still holds it (published examples drop it)."""
    return _real_dir(cell / protocol.SHARE, "share directory", missing_ok=True)


def _read_share(path: Path, limit: int, required: bool = True) -> str | None:
    try:
        return share.read_text(path, limit)
    except share.MissingFile:
        if required:
            raise InputError(f"{path}: missing (the share is incomplete; move it away to get a timeline "
                             "reconstructed from steps.csv)") from None
        return None
    except share.ShareError as e:
        raise InputError(f"{path.parent}/{e}") from None


def _steps_limit(spec: _Spec) -> int:
    # as the runner reads them: a row is at most 9 numbers of 20 digits
    return min(share.LIMIT_STEPS, (spec.steps + spec.warmup) * spec.agents * 200 + 4096)


def _probe_limit(spec: _Spec) -> int:
    # as the runner reads them
    return min(share.LIMIT_PROBE, 64 * share.MIB + (spec.steps + spec.warmup) * spec.agents * 16 * share.KIB)


def _raw_run(share_dir: Path, spec: _Spec, files: protocol.RunFiles, repeat: int,
             parsed: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """A run's stamps from the share, checked against the record's parsed steps (the same steps,
    to the ns), so a share that is not this record's is refused rather than drawn."""
    path = share_dir / files.steps
    text = _read_share(path, _steps_limit(spec))
    try:
        cols = parse_steps_csv(text, str(path), repeat, warmup=True)
    except StepsFormatError as e:
        raise InputError(str(e)) from None
    m = cols["warmup"] == 0
    if int(m.sum()) != spec.steps * spec.agents:
        raise InputError(f"{path}: {int(m.sum())} measured steps, the spec asks for {spec.steps * spec.agents}")
    if parsed is not None:
        got = {"agent": cols["agent"][m], "step": cols["step"][m], "cpu": cols["cpu"][m],
               "wait_us": cols["wait_ns"][m] / 1e3,
               "wake_us": (cols["wake_ns"] - cols["signal_ns"])[m] / 1e3,
               "step_us": (cols["done_ns"] - cols["signal_ns"])[m] / 1e3,
               "compute_us": (cols["done_ns"] - cols["phases_ns"])[m] / 1e3,
               "phases_us": (cols["phases_ns"] - cols["wake_ns"])[m] / 1e3}
        sel = parsed["repeat"] == repeat
        for k, v in got.items():
            want = parsed[k][sel]
            if len(want) != len(v) or not np.allclose(want, v, rtol=0, atol=6e-4):
                raise InputError(f"{path}: does not match {records.CELL_STEPS} ({k}): the share is not this "
                                 "record's (move it away to get a timeline reconstructed from steps.csv)")
    order = np.lexsort((cols["step"], cols["agent"]))
    return {k: cols[k][order] for k in COLUMNS}


def _snapshots(share_dir: Path, files: protocol.RunFiles) -> tuple[platform.Snapshot, platform.Snapshot] | None:
    texts = [_read_share(share_dir / n, share.LIMIT_SMALL, required=False) for n in (files.before, files.after)]
    if None in texts:
        return None
    try:
        return (platform.parse_snapshot(texts[0], files.before), platform.parse_snapshot(texts[1], files.after))
    except platform.SnapshotError as e:
        raise InputError(f"{share_dir}: {e}") from None


def _reconstructed(parsed: dict[str, np.ndarray], repeat: int) -> dict[str, np.ndarray]:
    """A repeat's steps laid end to end from 0: wait, then the step (wake, phases, compute)."""
    sel = parsed["repeat"] == repeat
    p = {k: v[sel] for k, v in parsed.items()}

    def ns(k):
        return np.rint(p[k] * 1000).astype(np.int64)
    out = {k: [] for k in COLUMNS}
    for a in np.unique(p["agent"]).astype(np.int64):
        mine = np.flatnonzero(p["agent"] == a)
        mine = mine[np.argsort(p["step"][mine], kind="stable")]
        wait, wake, step, compute = (ns(k)[mine] for k in ("wait_us", "wake_us", "step_us", "compute_us"))
        period = wait + step
        done = np.cumsum(period)
        signal = done - step
        wake_at = signal + np.minimum(wake, step)
        phases_at = np.maximum(wake_at, done - compute)
        for k, v in (("agent", np.full(len(mine), a)), ("step", p["step"][mine].astype(np.int64)),
                     ("warmup", np.zeros(len(mine), dtype=np.int64)), ("wait_ns", wait), ("signal_ns", signal),
                     ("wake_ns", wake_at), ("phases_ns", phases_at), ("done_ns", done),
                     ("cpu", p["cpu"][mine].astype(np.int64))):
            out[k].append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


# -- the trace -------------------------------------------------------------------------------------

def _agent_tid(pid: int, agent: int, kind: int = 0) -> int:
    return pid * 1000 + 10 * (agent + 1) + kind      # kind 0: steps, 1: on CPU, 2: window


def _wakeups(probe_recs: dict[str, Any]) -> list[tuple[int, int, int, int | None]]:
    """(tid, sched_waking, switch-in, cpu was idle) of every wakeup a probe saw."""
    if "wakeup_latency" in probe_recs:
        return [(r.tid, r.waking_ns, r.running_ns, int(r.cpu_was_idle)) for r in probe_recs["wakeup_latency"]]
    if "dvfs_ramp" in probe_recs:
        return [(r.tid, r.waking_ns, r.start_ns, None) for r in probe_recs["dvfs_ramp"][0] if r.waking_ns is not None]
    return []


def _match_wakeups(runs: list[_LoopRun], wakeups) -> tuple[dict[int, int], dict[tuple[int, int, int], tuple]]:
    """Kernel tid -> agent (by which agent's wake path each wakeup falls in), and per step
    (pid, agent, step) the wakeup inside its wake path: signal <= sched_waking <= switch-in <= stamp."""
    votes: Counter = Counter()
    by_tid: dict[int, list[tuple]] = {}
    for w in sorted(wakeups, key=lambda w: w[1]):
        by_tid.setdefault(w[0], []).append(w)
    for run in runs:
        c = run.cols
        for a in np.unique(c["agent"]):
            m = c["agent"] == a
            sig, wk = c["signal_ns"][m], c["wake_ns"][m]
            for tid, ws in by_tid.items():
                t = np.array([w[1] for w in ws], dtype=np.int64)
                i = np.searchsorted(sig, t, side="right") - 1
                ok = (i >= 0) & (t <= wk[np.maximum(i, 0)])
                votes[(tid, int(a))] += int(ok.sum())
    tid_agent: dict[int, int] = {}
    for (tid, a), n in sorted(votes.items(), key=lambda kv: -kv[1]):
        if n and tid not in tid_agent and a not in tid_agent.values():
            tid_agent[tid] = a
    matched: dict[tuple[int, int, int], tuple] = {}
    for tid, a in tid_agent.items():
        ws = by_tid[tid]
        t = np.array([w[1] for w in ws], dtype=np.int64)
        for run in runs:
            c = run.cols
            for k in np.flatnonzero(c["agent"] == a):
                s, wk = int(c["signal_ns"][k]), int(c["wake_ns"][k])
                j = int(np.searchsorted(t, s))
                if j < len(ws) and ws[j][1] <= ws[j][2] <= wk:
                    matched[(run.pid, a, int(c["step"][k]))] = ws[j]
    return tid_agent, matched


def _draw_run(ev: _Events, run: _LoopRun, matched: dict, step_time: dict, timeline: str,
              energy_by_repeat: list[float]) -> None:
    c, pid = run.cols, run.pid
    name = run.label if timeline == TIMELINE_GUEST else f"{run.label} (timeline {TIMELINE_RECONSTRUCTED})"
    ev.process(pid, name)
    ev.thread(pid, pid * 1000, "run")
    lead = c["wait_ns"] if timeline != TIMELINE_GUEST else 0   # a rebuilt repeat starts with its first wait
    start, end = int((c["signal_ns"] - lead).min()), int(c["done_ns"].max())
    args: dict[str, Any] = {"steps": int((c["warmup"] == 0).sum()), "warm-up steps": int((c["warmup"] == 1).sum())}
    if run.repeat is not None and run.repeat < len(energy_by_repeat):
        args["energy per step (uJ, result.json: its meter's window)"] = energy_by_repeat[run.repeat]
    if run.snapshots is not None:
        d = platform.delta(*run.snapshots)
        args.update({"energy (uJ, sysfs, whole repeat)": d.energy_uj, "active (us, whole repeat)": d.active_us,
                     "idle (us, whole repeat)": d.idle_us})
    ev.span(pid, pid * 1000, run.label, "repeat", start, end, args)
    for a in (int(x) for x in np.unique(c["agent"])):
        tid = _agent_tid(pid, a)
        ev.thread(pid, tid, f"agent-{a}")
        rows = np.flatnonzero(c["agent"] == a)
        prev_done = None
        for k in rows:
            sig, wk, ph, done = (int(c[x][k]) for x in ("signal_ns", "wake_ns", "phases_ns", "done_ns"))
            step, warm, cpu = int(c["step"][k]), bool(c["warmup"][k]), int(c["cpu"][k])
            wait_from = prev_done if prev_done is not None else (sig - int(c["wait_ns"][k])
                                                                  if timeline != TIMELINE_GUEST else None)
            if wait_from is not None and wait_from <= sig:
                ev.span(pid, tid, "wait", "wait", wait_from, sig, {"step": step, "nominal wait (us)":
                                                                   int(c["wait_ns"][k]) / 1e3})
            ev.span(pid, tid, "warm-up step" if warm else "step", "warmup" if warm else "step", sig, done,
                    {"step": step, "cpu": cpu, "wake (us)": (wk - sig) / 1e3, "phases (us)": (ph - wk) / 1e3,
                     "compute (us)": (done - ph) / 1e3, "step (us)": (done - sig) / 1e3})
            if not warm:
                step_time[run.label] = step_time.get(run.label, 0) + (done - sig)
            ev.span(pid, tid, "wake", "wake", sig, wk)
            w = matched.get((pid, a, step))
            if w is not None:
                _tid, waking, running, idle = w
                ev.span(pid, tid, "signal -> sched_waking", "wake", sig, waking)
                ev.span(pid, tid, "sched_waking -> switch-in", "wake", waking, running,
                        {"cpu was idle": bool(idle)} if idle is not None else None)
                ev.span(pid, tid, "switch-in -> loop stamp", "wake", running, wk)
            ev.span(pid, tid, "phases", "phases", wk, ph)
            ev.span(pid, tid, "compute", "compute", ph, done)
            prev_done = done
    if run.snapshots is not None:
        before, after = run.snapshots
        for cpu in sorted(after.idle):
            b = {s.name: s.time_us for s in before.idle.get(cpu, [])}
            pb, pa = before.per_cpu.get(cpu, {}), after.per_cpu.get(cpu, {})
            total = sum(pa.get(k, 0) - pb.get(k, 0) for k in ("active_us", "idle_us"))
            if total <= 0:
                continue
            vals = {s.name: round(100 * (s.time_us - b.get(s.name, 0)) / total, 3) for s in after.idle[cpu]
                    if s.time_us > b.get(s.name, 0)}   # a state it never entered: no track
            if not vals:
                continue
            for ts in (start, end):
                ev.counter(pid, f"cpu{cpu} idle residency % (repeat mean)", ts, vals)


def _draw_probes(ev: _Events, pid: int, probe_recs: dict[str, Any], tid_agent: dict[int, int],
                 cur_khz: dict[int, int], t0: int) -> None:
    named: dict[tuple[int, int], int] = {}

    def thread_of(ktid: int, kind: int, label: str) -> int:
        """The thread of an agent's kernel events; a tid no step's wakeup tells the agent of gets
        its own ("tid N ...")."""
        if (ktid, kind) not in named:
            a = tid_agent.get(ktid)
            tid = _agent_tid(pid, a, kind) if a is not None else pid * 1000 + 900 + len(named)
            named[(ktid, kind)] = tid
            ev.thread(pid, tid, f"agent-{a} {label}" if a is not None else f"tid {ktid} {label}")
        return named[(ktid, kind)]
    if "dvfs_ramp" in probe_recs:
        runs, freq = probe_recs["dvfs_ramp"]
        for cpu in sorted(set(freq) | set(cur_khz)):
            samples = freq.get(cpu, [])
            if cpu in cur_khz and (not samples or samples[0][0] > t0):
                samples = [(t0, cur_khz[cpu])] + samples
            for ns, khz in samples:
                ev.counter(pid, f"cpu{cpu} frequency requested", ns, {"MHz": khz / 1000})
        for r in sorted(runs, key=lambda r: r.start_ns):
            tid = thread_of(r.tid, 1, "on CPU")
            ev.span(pid, tid, "running", "sched", r.start_ns, r.stop_ns,
                    {"cpu": r.cpu, "woken": r.waking_ns is not None, "start MHz": _mhz(r.start_khz),
                     "max MHz": _mhz(r.max_khz), "mean MHz": _mhz(r.mean_khz), "frequency changes": r.changes,
                     "ramp (us)": r.ramp_ns / 1e3 if r.ramp_ns is not None else None})
        ev.tracks["dvfs_ramp: agent runs on a CPU (sched_switch)"] = None
    if "agent_window" in probe_recs:
        w: agent_window.WindowEvents = probe_recs["agent_window"]
        closes: dict[int, list[int]] = {}
        for pidk, _cpu, ns, _open_ns in sorted(w.closes, key=lambda c: c[2]):
            closes.setdefault(pidk, []).append(ns)
        opens: dict[int, list[tuple]] = {}
        for o in sorted(w.opens, key=lambda o: o[2]):
            opens.setdefault(o[0], []).append(o)
        for pidk, mine in opens.items():
            tid = thread_of(pidk, 2, "window")
            cl = closes.get(pidk, [])
            for i, (_p, cpu, ns, window_us, explicit) in enumerate(mine):
                # open until it is closed, runs out or the next one opens, whichever comes first
                end = ns + window_us * 1000
                if i + 1 < len(mine):
                    end = min(end, mine[i + 1][2])
                j = bisect.bisect_left(cl, ns)
                early = j < len(cl) and cl[j] <= end
                if early:
                    end = cl[j]
                ev.span(pid, tid, "window", "window", ns, end, {"cpu": cpu, "window (us)": window_us,
                                                                "explicit": explicit, "closed early": early})
        for pidk, cpu, ns in w.placed:
            ev.instant(pid, thread_of(pidk, 2, "window"), "placed on its idle CPU", "window", ns, {"cpu": cpu})
        for pidk, curr, cpu, ns in w.preempted:
            ev.instant(pid, thread_of(pidk, 2, "window"), "preempted a non-agent task", "window", ns,
                       {"cpu": cpu, "preempted tid": curr})
        ev.tracks["agent_window: windows, placements, preemptions"] = None


def _mhz(khz):
    return None if khz is None else round(khz / 1000, 1)


def build_trace(cell_dir: Path) -> tuple[dict[str, Any], TraceSummary]:
    cell = _cell_dir(Path(cell_dir))
    rec, spec = _record(cell)
    parsed = _parsed(cell / records.CELL_STEPS)
    separate = bool(rec.probes) and spec.probe_run == "separate"
    total = (spec.steps + spec.warmup) * spec.agents * (rec.repeats + int(separate))
    if total > MAX_STEPS:
        raise InputError(f"{cell}: {total} steps, more than the {MAX_STEPS} a trace holds (no viewer loads it)")
    share_dir = _share(cell)
    why = f"no guest share ({protocol.SHARE}/) in the cell directory: steps.csv has durations, not timestamps"
    absent: dict[str, str] = {}
    notes: list[str] = []
    runs: list[_LoopRun] = []
    if share_dir is not None:
        timeline = TIMELINE_GUEST
        for r in range(rec.repeats):
            f = protocol.repeat_files(r)
            runs.append(_LoopRun(f"repeat {r}", r + 1, r, _raw_run(share_dir, spec, f, r, parsed),
                                 _snapshots(share_dir, f)))
        if separate:
            probed = _parsed(cell / records.CELL_PROBED_STEPS, required=False)
            if probed is None:
                notes.append(f"{records.CELL_PROBED_STEPS} absent: the traced run's stamps are not checked")
            f = protocol.PROBED_FILES
            runs.append(_LoopRun("traced run (probes attached)", rec.repeats + 1, None,
                                 _raw_run(share_dir, spec, f, 0, probed), _snapshots(share_dir, f)))
        if any(r.snapshots is None for r in runs):
            absent["idle residency (some repeats)"] = "a platform snapshot is missing from the share"
    else:
        timeline = TIMELINE_RECONSTRUCTED
        for r in range(rec.repeats):
            if not (parsed["repeat"] == r).any():
                raise InputError(f"{cell / records.CELL_STEPS}: no steps of repeat {r}")
            runs.append(_LoopRun(f"repeat {r}", r + 1, r, _reconstructed(parsed, r)))
        absent["idle residency"] = f"{why} (the platform snapshots are in the share)"
        if separate:
            absent["traced run"] = f"{why}; its probes' events could not be placed against it"

    # probes: what they saw, on the run(s) they traced
    probe_recs: dict[str, Any] = {}
    cur_khz: dict[int, int] = {}
    traced = [r for r in runs if r.repeat is None] if separate else runs
    for name in sorted(rec.probes):
        if name not in DRAWN_PROBES:
            absent[f"probe {name}"] = "ran, but the trace does not draw its records yet (see its summary in " \
                "result.json and probe-" + name + ".csv)"
    if share_dir is not None and rec.probes:
        before = traced[0].snapshots[0] if traced and traced[0].snapshots else None
        cur_khz = dict(before.cur_khz) if before else {}
        measured = [{k: v[r.cols["warmup"] == 0] for k, v in r.cols.items()} for r in traced]
        for r, m in zip(traced, measured, strict=True):
            m["repeat"] = np.full(len(m["step"]), r.pid)
        loop = LoopTimeline.from_columns({k: np.concatenate([m[k] for m in measured]) for k in measured[0]})
        ctx = ProbeContext(cur_khz=cur_khz, loop=loop)
        for name in DRAWN_PROBES:
            if name not in rec.probes:
                continue
            path = share_dir / protocol.probe_output(name)
            text = _read_share(path, _probe_limit(spec), required=False)
            if text is None:
                absent[f"probe {name}"] = f"its output {path.name} is not in the share"
                continue
            try:
                out = bpftrace_json.parse(text, str(path))
                if name == "wakeup_latency":
                    probe_recs[name] = wakeup_latency.records(out, ctx)
                elif name == "dvfs_ramp":
                    probe_recs[name] = (dvfs_ramp.records(out, ctx), dvfs_ramp.frequency_changes(out))
                else:
                    probe_recs[name] = agent_window.records(out, ctx)
            except bpftrace_json.ProbeOutputError as e:
                raise InputError(f"{path}: {e}") from None
            except Exception as e:   # any shape of output the parser did not expect
                raise InputError(f"{path}: malformed output ({type(e).__name__})") from None

    wakeups = _wakeups(probe_recs)
    tid_agent, matched = _match_wakeups(traced, wakeups) if wakeups else ({}, {})
    if wakeups and not tid_agent:   # e.g. comm names other than agent-N: tids cannot be told apart
        notes.append("no probed wakeup fell inside a step's wake path: wake paths are not split")
    ev = _Events()
    step_time: dict[str, int] = {}
    energy = rec.platform.energy_per_step_by_repeat_uj if rec.platform else []
    for run in runs:
        _draw_run(ev, run, matched, step_time, timeline, energy)
    ev.tracks.update({"agent-N: wait, step (wake, phases, compute) spans per run": None})
    if matched:
        ev.tracks[f"wake path split ({'wakeup_latency' if 'wakeup_latency' in probe_recs else 'dvfs_ramp'}): "
                  f"{len(matched)} steps"] = None
    if probe_recs:
        probe_pid = traced[0].pid if separate else len(runs) + 1
        if not separate:
            ev.process(probe_pid, "kernel events (bpftrace, every repeat)")
        t0 = int(min(r.cols["signal_ns"].min() for r in traced))
        t0 = min([t0] + [f[0][0] for f in probe_recs.get("dvfs_ramp", ([], {}))[1].values() if f])
        _draw_probes(ev, probe_pid, probe_recs, tid_agent, cur_khz, t0)

    def why_absent(*tools: str) -> str:
        ran = [t for t in tools if t in rec.probes]
        if not ran:
            return f"{' or '.join(tools)} was not among the cell's probes"
        if share_dir is None:
            return f"{why}: the probes' kernel events cannot be placed against the steps"
        return "; ".join(absent.get(f"probe {t}", f"{t}: nothing matched") for t in ran)
    if "dvfs_ramp" in probe_recs:
        notes.append("frequency tracks are the governor's requests (power:cpu_frequency fires at the request); "
                     "sim-cpufreq applies each transition_latency_us later; the first value is the sysfs snapshot "
                     "before the run")
    else:
        absent["frequency"] = why_absent("dvfs_ramp")
    if "agent_window" not in probe_recs:
        absent["windows"] = why_absent("agent_window") + (" (it needs a CONFIG_AGENT_LATENCY=y kernel)"
                                                          if "agent_window" not in rec.probes else "")
    if not matched:
        absent["wake path parts"] = why_absent("wakeup_latency", "dvfs_ramp")
    absent["idle-state timeline"] = ("no probe records power:cpu_idle, so there is no per-entry idle track; the "
                                     "residency counters are each repeat's mean from sysfs snapshots")
    other = {
        "format": FORMAT, "cell": rec.cell, "run_id": rec.run_id, "experiment": rec.experiment, "arch": rec.arch,
        "variant": rec.variant, "axes": rec.axes, "kernel": rec.kernel.release if rec.kernel else None,
        "guest timing": rec.guest.timing_label if rec.guest else None,
        "timeline": timeline,
        "timeline note": ("ts: the loop's own CLOCK_MONOTONIC stamps (guest/steps-r<N>.csv, checked against "
                          "steps.csv) and bpftrace's, in us" if timeline == TIMELINE_GUEST else
                          "RECONSTRUCTED: each repeat laid out from 0 as wait, step, wait, step ... from steps.csv; "
                          "durations within a step are the measured ones, gaps are nominal waits (the world "
                          "thread's own wakeup latency is missing, so absolute positions drift)"),
        "measured step time per run (us)": {k: v / 1e3 for k, v in step_time.items()},
        "platform (result.json, every repeat and CPU)": (
            {"freq_residency": rec.platform.freq_residency, "idle_residency": rec.platform.idle_residency,
             "energy_per_step_by_repeat_uj": rec.platform.energy_per_step_by_repeat_uj} if rec.platform else None),
        "tracks": list(ev.tracks), "absent": absent, "notes": notes,
    }
    trace = {"traceEvents": ev.events, "otherData": other}
    counts = dict(Counter(e["ph"] for e in ev.events))
    return trace, TraceSummary(Path(), timeline, counts, list(ev.tracks), absent, notes)


def write_trace(cell_dir: Path, output: Path) -> TraceSummary:
    if output.is_dir():
        raise InputError(f"{output}: is a directory (name the trace file, e.g. cell.json)")
    trace, summary = build_trace(cell_dir)
    atomic_write_text(output, json.dumps(trace, separators=(",", ":")) + "\n")
    summary.path = output
    return summary


__all__ = ["build_trace", "write_trace", "TraceSummary"]
