"""`python -m harness trace RUN_DIR/CELL`: a cell as a Chrome trace-event JSON for the Perfetto UI.

The trace is checked against the trace-event rules a viewer relies on (every span has ts, dur >= 0,
pid and tid; spans of one thread nest and never partly overlap; counters move forward in time per
track; Perfetto's ns conversion gives the loop's own stamps back) and against the records: the
measured step spans of each run add up to steps.csv. Inputs: a run replayed by the fake backend
from recorded real guests (its share keeps the loop's CLOCK_MONOTONIC stamps and the probes'
events) and a committed example (no share: a reconstructed, labelled timeline). Perfetto's own
trace_processor is not used: the PyPI package downloads its binary at first use, which this
machine and CI cannot."""

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from harness import records
from harness.analysis.steps import read_parsed_csv
from harness.cli import main
from harness.guest import protocol
from harness.guest.fake import FakeBackend, FakeKernels
from harness.kernel.cache import BuildCache
from harness.runner import Runner
from harness.spec import load_experiment

FIXTURES = Path(__file__).parent / "fixtures" / "guest"
EXAMPLE = (Path(__file__).parent.parent / "results" / "examples" / "dvfs_ramp-v2-x86"
           / "x86_64-agent-preset_x86-skl-client")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    """A run of the recording experiment on the fake backend: the cell directories a real run leaves."""
    tmp = tmp_path_factory.mktemp("trace-run")
    f = tmp / "fake.yaml"
    f.write_text((FIXTURES / "recording.yaml").read_text().replace("name: recording", "name: fake"))
    r = Runner(load_experiment(f), tmp / "results", cache=BuildCache(tmp / "cache"),
               backend=FakeBackend({a: FIXTURES / a for a in ("x86_64", "arm64")}), builder=FakeKernels(tmp / "k"))
    assert [o.status for o in r.run()] == ["ok", "ok"]
    return r.run_dir


def _ns(x: float) -> int:
    """What Perfetto makes of a trace-event time: us x 1000, truncated (json_utils CoerceToTs)."""
    return int(x * 1000.0)


def check_trace(trace: dict) -> dict:
    """The trace-event invariants; returns the events grouped for further checks."""
    assert set(trace) >= {"traceEvents", "otherData"}
    assert "displayTimeUnit" not in trace      # ts is in us; some Perfetto builds read this key as its unit
    names: dict[tuple, str] = {}
    procs: dict[int, str] = {}
    spans: dict[tuple[int, int], list[tuple[int, int, str]]] = defaultdict(list)
    counters: dict[tuple, list[int]] = defaultdict(list)
    for e in trace["traceEvents"]:
        assert e["ph"] in ("X", "C", "i", "M"), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and isinstance(e["name"], str), e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index"), e
            if e["name"] == "process_name":
                procs[e["pid"]] = e["args"]["name"]
            elif e["name"] == "thread_name":
                names[(e["pid"], e["tid"])] = e["args"]["name"]
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        # truncation and rounding agree: the ns a viewer shows are the stamps the loop wrote
        assert _ns(e["ts"]) == round(e["ts"] * 1000), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
            assert _ns(e["dur"]) == round(e["dur"] * 1000), e
            spans[(e["pid"], e["tid"])].append((_ns(e["ts"]), _ns(e["ts"]) + _ns(e["dur"]), e["name"]))
        elif e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values()), e
            for k in e["args"]:
                counters[(e["pid"], e["name"], k)].append(_ns(e["ts"]))
        else:
            assert e["s"] in ("t", "p", "g"), e
    for (pid, tid), ss in spans.items():
        assert pid in procs and (pid, tid) in names, (pid, tid)
        stack: list[tuple[int, int, str]] = []
        for start, end, name in sorted(ss, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack:   # inside the enclosing span, never across its end
                assert end <= stack[-1][1], (names[(pid, tid)], stack[-1], (start, end, name))
            stack.append((start, end, name))
    for track, ts in counters.items():
        assert ts == sorted(ts), track
    return {"procs": procs, "threads": names, "spans": spans, "counters": counters}


def _trace(cell: Path, tmp_path: Path, capsys=None) -> dict:
    out = tmp_path / f"{cell.name}.json"
    assert main(["trace", str(cell), "-o", str(out)]) == 0
    return json.loads(out.read_text())


def _step_sums(trace: dict, g: dict) -> dict[str, tuple[float, int]]:
    """Per process: the measured step spans' total (us) and count."""
    out: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in trace["traceEvents"]:
        if e["ph"] == "X" and e["name"] == "step":
            s = out[g["procs"][e["pid"]]]
            s[0] += _ns(e["dur"]) / 1000
            s[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_a_traced_cell_is_drawn_on_the_guest_clock(replayed, tmp_path, arch):
    cell = replayed / f"{arch}-base"
    trace = _trace(cell, tmp_path)
    g = check_trace(trace)
    meta = trace["otherData"]
    assert meta["timeline"] == "guest CLOCK_MONOTONIC" and meta["cell"] == f"{arch}-base"
    assert set(g["procs"].values()) == {"repeat 0", "repeat 1", "traced run (probes attached)"}
    assert {n for n in g["threads"].values()} >= {"agent-0", "agent-0 on CPU", "run"}
    # the measured step spans of each run are the recorded steps, to rounding
    steps = read_parsed_csv(cell / records.CELL_STEPS)
    probed = read_parsed_csv(cell / records.CELL_PROBED_STEPS)
    sums = _step_sums(trace, g)
    for label, want in [(f"repeat {r}", steps["step_us"][steps["repeat"] == r]) for r in (0, 1)] + \
            [("traced run (probes attached)", probed["step_us"])]:
        total, n = sums[label]
        assert n == len(want) == 60
        assert abs(total - want.sum()) <= 1e-3 * n, label
    # the repeats follow each other on one clock (one boot), the traced run last
    starts = {g["procs"][e["pid"]]: e["ts"] for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "repeat"}
    assert starts["repeat 0"] < starts["repeat 1"] < starts["traced run (probes attached)"]
    # the probes' wakeups split the traced run's wake paths; frequency and idle counters are there
    parts = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "sched_waking -> switch-in"]
    assert len(parts) == _probe_seen_wakeups(cell) > 0
    assert all(g["procs"][e["pid"]].startswith("traced") for e in parts)
    freq = {k for k in g["counters"] if "frequency requested" in k[1]}
    assert {k[1] for k in freq} == {"cpu0 frequency requested", "cpu1 frequency requested"}
    assert any("idle residency" in k[1] for k in g["counters"])
    assert "windows" in meta["absent"] and "idle-state timeline" in meta["absent"]


def test_a_committed_example_gets_a_reconstructed_timeline_and_says_so(tmp_path):
    trace = _trace(EXAMPLE, tmp_path)
    g = check_trace(trace)
    meta = trace["otherData"]
    assert meta["timeline"] == "reconstructed from durations" and "RECONSTRUCTED" in meta["timeline note"]
    assert all("reconstructed" in name for name in g["procs"].values()), g["procs"]
    steps = read_parsed_csv(EXAMPLE / records.CELL_STEPS)
    sums = _step_sums(trace, g)
    for r in np.unique(steps["repeat"]).astype(int):
        want = steps["step_us"][steps["repeat"] == r]
        total, n = sums[f"repeat {r} (timeline reconstructed from durations)"]
        assert n == len(want) and abs(total - want.sum()) <= 1e-3 * n
    assert not any(e["ph"] == "C" for e in trace["traceEvents"])
    for track in ("frequency", "wake path parts", "idle residency", "traced run"):
        assert "no guest share" in meta["absent"][track], track


def _probe_wakeups(cell: Path) -> tuple[int, list[tuple[int, int]]]:
    """From the recording itself: the agent's tid (the one whose sched_waking falls in the most wake
    paths of the traced run) and its (waking, running) pairs in time order."""
    rows = [[int(x) for x in r.split(",")]
            for r in (cell / protocol.SHARE / protocol.PROBED_FILES.steps).read_text().splitlines()[1:]]
    paths = [(r[4], r[5]) for r in rows]                       # signal_ns, wake_ns
    recs = []
    for line in (cell / protocol.SHARE / protocol.probe_output("wakeup_latency")).read_text().splitlines():
        e = json.loads(line) if line.startswith("{") else {}
        if e.get("type") == "printf":
            tid, _cpu, waking, running, _idle = (int(x) for x in e["data"].split())
            recs.append((tid, waking, running))
    votes = {}
    for tid, waking, _ in recs:
        votes[tid] = votes.get(tid, 0) + sum(s <= waking <= w for s, w in paths)
    tid = max(votes, key=votes.get)
    return tid, sorted((w, r) for t, w, r in recs if t == tid)


def _probe_seen_wakeups(cell: Path) -> int:
    """Steps of the traced run (warm-up included) whose wake path holds the agent's next wakeup
    after the signal (signal <= sched_waking <= switch-in <= the loop's stamp): the ones the trace
    splits."""
    _tid, ws = _probe_wakeups(cell)
    rows = [[int(x) for x in r.split(",")]
            for r in (cell / protocol.SHARE / protocol.PROBED_FILES.steps).read_text().splitlines()[1:]]
    n = 0
    for r in rows:
        nxt = next(((w, run) for w, run in ws if w >= r[4]), None)
        n += nxt is not None and nxt[0] <= nxt[1] <= r[5]
    return n


def test_window_events_become_spans_and_instants(replayed, tmp_path):
    """agent_window's events (no recording carries them yet: made here, on the traced run's own
    steps) give a window per step on an "agent-0 window" thread, and placement/preemption instants."""
    cell = tmp_path / "cell"
    shutil.copytree(replayed / "x86_64-base", cell, symlinks=True)
    rec = json.loads((cell / records.CELL_RESULT).read_text())
    rec["probes"]["agent_window"] = {"windows_opened": 70}
    (cell / records.CELL_RESULT).write_text(json.dumps(rec))
    raw = (cell / protocol.SHARE / protocol.PROBED_FILES.steps).read_text().splitlines()[1:]
    lines = ['{"type": "attached_probes", "data": {"probes": 6}}']
    tid, _ = _probe_wakeups(cell)    # the agent's tid in the recording (wakeup_latency sees it)
    for i, row in enumerate(raw):
        _a, _s, _w, _wait, signal, wake, _ph, done, cpu = (int(x) for x in row.split(","))
        ev = [f"P {tid} {cpu} {signal + 500}", f"O {tid} {cpu} {signal + 600} 5000 0"]
        if i % 2:
            ev.append(f"C {tid} {cpu} {done} {done - signal - 600}")
        if i == 3:
            ev.append(f"E {tid} 99 {cpu} {wake - 100}")
        lines += [json.dumps({"type": "printf", "data": e + "\n"}) for e in ev]
    (cell / protocol.SHARE / protocol.probe_output("agent_window")).write_text("\n".join(lines) + "\n")
    trace = _trace(cell, tmp_path)
    g = check_trace(trace)
    windows = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "window"]
    assert len(windows) == 70 and {g["threads"][(e["pid"], e["tid"])] for e in windows} == {"agent-0 window"}
    assert sum(e["args"]["closed early"] for e in windows) == 35
    # a window not closed early lasts until the next opens or its 5 ms run out
    assert all(e["dur"] <= 5000.0002 for e in windows)
    inst = [e["name"] for e in trace["traceEvents"] if e["ph"] == "i"]
    assert inst.count("placed on its idle CPU") == 70 and inst.count("preempted a non-agent task") == 1
    assert "windows" not in trace["otherData"]["absent"]


def _cli_error(args, capsys) -> str:
    assert main(["trace", *args]) == 2
    return capsys.readouterr().err


def test_bad_cell_directories_are_input_errors_naming_the_path(replayed, tmp_path, capsys):
    out = str(tmp_path / "t.json")
    assert "a run directory" in _cli_error([str(replayed), "-o", out], capsys)
    missing = tmp_path / "nothing"
    assert str(missing) in _cli_error([str(missing), "-o", out], capsys)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert "not a cell directory" in _cli_error([str(plain), "-o", out], capsys)
    link = tmp_path / "link"
    link.symlink_to(replayed / "x86_64-base")
    assert "symbolic link" in _cli_error([str(link), "-o", out], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _cli_error([str(empty), "-o", out], capsys)
    assert str(empty) in err and "result.json: missing" in err
    assert "*.json" in _cli_error([str(replayed / "x86_64-base"), "-o", str(tmp_path / "t.html")], capsys)
    assert not (tmp_path / "t.json").exists()


def _copy(replayed, tmp_path, name="cell") -> Path:
    cell = tmp_path / name
    shutil.copytree(replayed / "x86_64-base", cell, symlinks=True)
    return cell


def test_links_and_oversized_files_in_a_cell_are_refused(replayed, tmp_path, capsys):
    out = str(tmp_path / "t.json")
    cell = _copy(replayed, tmp_path, "linked-steps")        # a link in place of steps.csv
    (cell / records.CELL_STEPS).unlink()
    (cell / records.CELL_STEPS).symlink_to(replayed / "x86_64-base" / records.CELL_STEPS)
    err = _cli_error([str(cell), "-o", out], capsys)
    assert str(cell) in err and "symbolic link" in err
    cell = _copy(replayed, tmp_path, "huge-steps")          # sparse: refused by its size, never read
    os.truncate(cell / records.CELL_STEPS, records.STEPS_LIMIT + 1)
    assert "limit" in _cli_error([str(cell), "-o", out], capsys)
    cell = _copy(replayed, tmp_path, "linked-share")        # the guest's share itself a link
    shutil.rmtree(cell / protocol.SHARE)
    (cell / protocol.SHARE).symlink_to(replayed / "x86_64-base" / protocol.SHARE)
    err = _cli_error([str(cell), "-o", out], capsys)
    assert str(cell / protocol.SHARE) in err and "symbolic link" in err
    cell = _copy(replayed, tmp_path, "linked-probe")        # a link the guest left for a probe's output
    target = cell / protocol.SHARE / protocol.probe_output("dvfs_ramp")
    target.unlink()
    target.symlink_to("/etc/passwd")
    err = _cli_error([str(cell), "-o", out], capsys)
    assert "probe-dvfs_ramp.json" in err and "symbolic link" in err
    cell = _copy(replayed, tmp_path, "huge-probe")
    os.truncate(cell / protocol.SHARE / protocol.probe_output("dvfs_ramp"), 2 << 30)
    assert "limit" in _cli_error([str(cell), "-o", out], capsys)
    assert not (tmp_path / "t.json").exists()


def test_a_share_that_is_not_the_records_is_refused(replayed, tmp_path, capsys):
    cell = _copy(replayed, tmp_path)
    f = cell / protocol.SHARE / protocol.repeat_files(1).steps
    head, *rows = f.read_text().splitlines()
    cols = rows[20].split(",")
    cols[7] = str(int(cols[7]) + 5000)      # a measured step 5 us longer than steps.csv says
    rows[20] = ",".join(cols)
    f.write_text("\n".join([head, *rows]) + "\n")
    err = _cli_error([str(cell), "-o", str(tmp_path / "t.json")], capsys)
    assert str(f) in err and "does not match steps.csv" in err
    f.unlink()
    err = _cli_error([str(cell), "-o", str(tmp_path / "t.json")], capsys)
    assert str(f) in err and "missing" in err


def test_a_failed_cell_has_nothing_to_trace(replayed, tmp_path, capsys):
    cell = _copy(replayed, tmp_path)
    rec = json.loads((cell / records.CELL_RESULT).read_text())
    rec.update(status="failed", failure="hang", reason="guest hung")
    (cell / records.CELL_RESULT).write_text(json.dumps(rec))
    err = _cli_error([str(cell), "-o", str(tmp_path / "t.json")], capsys)
    assert "the cell failed (hang: guest hung)" in err
