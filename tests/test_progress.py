"""Live progress of a run: the guest's repeats as its status file reports them, cell i/N, an ETA
from earlier cells' wall times (and where it came from), `plan`'s resume/run preview, rootfs
build progress, and the line budget off a terminal. Fake backend only: nothing boots."""

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from harness import eta, records
from harness.guest import protocol, rootfs
from harness.guest.fake import FakeBackend
from harness.guest.watch import GuestEvent, StatusWatch
from harness.kernel.source import DEBIAN_TARBALL
from harness.run_progress import RunProgress

sys.path.insert(0, str(Path(__file__).parent))
from test_runner_fake import RECORDINGS, experiment, runner  # noqa: E402


def plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


# -- the guest's status, live ----------------------------------------------------------------------------

def test_status_watch_reports_each_progress_key_once_as_it_appears(tmp_path):
    status = tmp_path / protocol.STATUS
    w = StatusWatch(tmp_path, repeats=3, on_event=lambda ev: None)
    assert w.poll() == []                                           # no file yet
    status.write_text("guest_up=1.0\nworkload_start=2.5\n")
    assert w.poll() == [GuestEvent("workload-start")]
    with open(status, "a") as fh:
        fh.write("repeat_0_exit=0\nrepeat_1_exit=")                 # the guest is half-way through a line
    assert w.poll() == [GuestEvent("repeat", 0, 0)]
    with open(status, "a") as fh:
        fh.write("7\n")
    assert w.poll() == [GuestEvent("repeat", 1, 7)]
    assert w.poll() == []
    with open(status, "a") as fh:
        fh.write("repeat_2_exit=rm -rf /\nrepeat_9_exit=0\nprobed_exit=0\n")   # garbage, a repeat not asked for
    assert w.poll() == [GuestEvent("probed", None, 0)]


def test_status_watch_reads_no_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("workload_start=1\nrepeat_0_exit=0\n")
    (tmp_path / protocol.STATUS).symlink_to(target)
    assert StatusWatch(tmp_path, 1, lambda ev: None).poll() == []


class SlowGuest:
    """The fake backend, but the guest's status lines arrive over time as a real guest's do."""

    def __init__(self, delay=0.25):
        self.inner = FakeBackend(RECORDINGS)
        self.delay = delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, cfg, share_dir, *args):
        status = share_dir / protocol.STATUS
        for line in ("guest_up=1\nworkload_start=2\n", "repeat_0_exit=0\n", "repeat_1_exit=0\n"):
            with open(status, "a") as fh:
                fh.write(line)
            time.sleep(self.delay)
        return self.inner.run(cfg, share_dir, *args)


def test_a_run_shows_cells_repeats_and_an_eta_from_the_cells_before(tmp_path):
    le = experiment(tmp_path)
    console, buf = plain_console()
    r, _, _ = runner(tmp_path, le, backend=SlowGuest(), console=console, poll_s=0.02, progress_interval=1e9)
    assert [o.status for o in r.run()] == ["ok", "ok"]
    out = buf.getvalue()
    lines = out.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("[1/2] x86_64-base"))
    second = next(i for i, ln in enumerate(lines) if ln.startswith("[2/2] arm64-base"))
    assert "(ETA 2 cells to run: no estimate (no earlier record))" in lines[first]
    # the second cell's estimate is the first cell's wall time (the only earlier one, of another arch)
    wall = records.read(r.run_dir / "x86_64-base" / records.CELL_RESULT, records.CellResult).cell_wall_s
    assert f"(ETA 1 cell to run: {eta.duration(wall)} for 1 cell (mean of 1 cell of other arches: 1))" in lines[second]
    for start, end in ((first, second), (second, len(lines))):
        cell = lines[start:end]
        reps = [ln.strip() for ln in cell if ln.strip().startswith("repeat ")]
        assert [x.split(",")[0] for x in reps] == ["repeat 1/2 done", "repeat 2/2 done"], cell   # once each, in order
        assert sum("workload started" in ln for ln in cell) == 1
    # a second run resumes both cells: nothing left to estimate, no guest, no repeat lines
    console2, buf2 = plain_console()
    r2, backend2, _ = runner(tmp_path, le, console=console2)
    assert [o.status for o in r2.run()] == ["skipped", "skipped"] and backend2.runs == []
    assert "ETA" not in buf2.getvalue() and "repeat 1/2" not in buf2.getvalue()


def test_off_a_terminal_a_quiet_cell_gets_one_heartbeat_per_interval():
    console, buf = plain_console()
    p = RunProgress(console, 3, [("c1", "x86_64"), ("c2", "x86_64")], {}, repeats=2, interval=0.2)
    p.cell_start(1, "c1")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        p.tick()                 # the watcher ticks at every poll: far more often than the interval
        time.sleep(0.005)
    beats = [ln for ln in buf.getvalue().splitlines() if ln.startswith("    ... c1:")]
    assert 1 <= len(beats) <= 3, beats
    assert "repeat 1/2 running" in beats[0]
    p.guest_event(GuestEvent("repeat", 0, 0))
    assert buf.getvalue().splitlines()[-1].startswith("    repeat 1/2 done, exit 0")
    p.cell_done("c1", "x86_64", 30.0)
    assert p.eta_text() == "1 cell to run: 30s for 1 cell (mean of 1 x86_64 cell: 1)"


def test_on_a_terminal_the_status_line_is_redrawn_not_printed():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    p = RunProgress(console, 1, [("c1", "x86_64")], {}, repeats=1, interval=0.0)
    p.cell_start(1, "c1")
    for _ in range(50):
        p.tick()
    p.cell_done("c1", "x86_64", None)
    assert buf.getvalue().count("[1/1]") == 1 and "... c1" not in buf.getvalue()


# -- ETA -------------------------------------------------------------------------------------------------

def test_estimates_prefer_the_cells_own_record_then_its_arch_then_any():
    known = {"a": eta.Wall("x86_64", 100.0, "r"), "b": eta.Wall("x86_64", 200.0, "r"),
             "c": eta.Wall("arm64", 600.0, "r")}
    got = eta.estimate([("a", "x86_64"), ("new", "x86_64"), ("new2", "arm64"), ("new3", "riscv")], known)
    assert [(e.seconds, e.source) for e in got] == [
        (100.0, "its earlier record"), (150.0, "mean of 2 x86_64 cells"), (600.0, "mean of 1 arm64 cell"),
        (300.0, "mean of 3 cells of other arches")]
    assert eta.describe(got) == ("19m10s for 4 cells (its earlier record: 1; mean of 2 x86_64 cells: 1; "
                                 "mean of 1 arm64 cell: 1; mean of 3 cells of other arches: 1)")
    none = eta.estimate([("x", "x86_64")], {})
    assert none[0].seconds is None and eta.describe(none) == "no estimate (no earlier record)"


def test_history_falls_back_to_the_latest_earlier_run_of_the_experiment(tmp_path):
    le = experiment(tmp_path)
    r, _, _ = runner(tmp_path, le, run_id="old")
    r.run()
    other = experiment(tmp_path, name="other")
    runner(tmp_path, other, run_id="unrelated")[0].run()
    known, source = eta.history(tmp_path / "results" / "new", "fake")
    assert source == tmp_path / "results" / "old"
    assert {c: w.seconds for c, w in known.items()} == {
        o.cell.id: o.record.cell_wall_s for o in r.run() if o.record is not None}   # the records' cell_wall_s
    assert eta.history(tmp_path / "results" / "new", "nobody") == ({}, None)


# -- plan: what a run would do ------------------------------------------------------------------------------

def _kernel_key(built: bool):
    return lambda req: f"fake-{req.arch}-{req.variant}" if built else None


def test_preview_names_the_cells_a_run_would_resume_and_those_it_would_run(tmp_path):
    le = experiment(tmp_path, body="variants:\n  - name: a\n  - name: b\n", arch="[x86_64]")
    r, backend, kernels = runner(tmp_path, le, run_id="p")
    r.run()
    tools = lambda arch: RECORDINGS[arch].name   # noqa: E731  (the fake backend's workload directory)
    # a failed cell runs again; an ok one with today's fingerprint resumes
    rec = json.loads((r.run_dir / "x86_64-b" / records.CELL_RESULT).read_text())
    rec.update(status="failed", failure="hang")
    (r.run_dir / "x86_64-b" / records.CELL_RESULT).write_text(json.dumps(rec))
    fresh, _, _ = runner(tmp_path, le, run_id="p", backend=backend)
    cells, source = fresh.preview(_kernel_key(True), tools)
    assert source == r.run_dir
    assert [(c.cell, c.action) for c in cells] == [("x86_64-a", "resume"), ("x86_64-b", "run")]
    assert cells[0].estimate is None and cells[1].why == "record failed"
    assert cells[1].estimate.source == "mean of 1 x86_64 cell"       # b's own record failed: a's wall time
    # ... which is what a run then does
    outs = runner(tmp_path, le, run_id="p", backend=FakeBackend(RECORDINGS))[0].run()
    assert [o.status for o in outs] == ["skipped", "ok"]
    # not built: unknown; another workload: run; --redo: run
    cells, _ = fresh.preview(_kernel_key(False), tools)
    assert {c.action for c in cells} == {"unknown"} and all(c.estimate.source == "its earlier record" for c in cells)
    cells, _ = fresh.preview(_kernel_key(True), lambda arch: "another-binary")
    assert {c.action for c in cells} == {"run"} and "another fingerprint" in cells[0].why
    redo, _, _ = runner(tmp_path, le, run_id="p", redo=True, backend=backend)
    assert {c.action for c in redo.preview(_kernel_key(True), tools)[0]} == {"run"}


@pytest.mark.skipif(not DEBIAN_TARBALL.is_file(), reason="plan needs the kernel source's identity")
def test_plan_prints_the_eta_and_where_it_came_from(tmp_path):
    le = experiment(tmp_path, arch="[x86_64]")
    r, _, _ = runner(tmp_path, le)
    r.run()
    cache = tmp_path / "plan-cache"   # no kernel built there: every cell's fate is unknown
    got = subprocess.run([sys.executable, "-m", "harness", "plan", str(le.path), "--cache-dir", str(cache),
                          "--results-dir", str(tmp_path / "results")], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    wall = records.read(r.run_dir / "x86_64-base" / records.CELL_RESULT, records.CellResult).cell_wall_s
    assert f"ETA: {eta.duration(wall)} for 1 cell (its earlier record: 1); from the records in {r.run_dir}" \
        in got.stdout
    assert "0 resume (ok record with the same fingerprint), 0 run, 1 unknown" in got.stdout
    fresh = subprocess.run([sys.executable, "-m", "harness", "plan", str(le.path), "--cache-dir", str(cache),
                            "--results-dir", str(tmp_path / "empty")], capture_output=True, text=True)
    assert "ETA: no estimate (no earlier record)" in fresh.stdout and "x86_64-base: run: no record" in fresh.stdout


# -- rootfs build progress ---------------------------------------------------------------------------------

MMDEBSTRAP = """I: automatically chosen mode: root
I: running apt-get update...
Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]
I: downloading packages with apt...
I: extracting archives...
I: installing essential packages...
Setting up libc6:arm64 (2.36-9+deb12u7) ...
Setting up bash (5.2.15-2+b7) ...
I: installing remaining packages inside the chroot...
Setting up bpftrace (0.17.0-1) ...
I: cleaning package lists and apt cache...
I: success in 187.2 seconds
"""


def test_rootfs_progress_is_a_line_per_stage_off_a_terminal():
    console, buf = plain_console()
    with rootfs.RootfsProgress("arm64", console, interval=1e9) as p:
        for line in MMDEBSTRAP.splitlines(keepends=True):
            p.feed(line)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "[rootfs arm64] started"
    assert len(lines) == 1 + MMDEBSTRAP.count("I: ")          # apt's own lines print nothing
    assert lines[-2].startswith("[rootfs arm64] cleaning package lists and apt cache: 3 packages set up, ")
    assert lines[-1].startswith("[rootfs arm64] success in 187.2 seconds")


def test_rootfs_build_output_goes_to_the_log_and_the_progress(tmp_path):
    """The command's stdin (apt sources) arrives, every line reaches the log, stages reach the view."""
    console, buf = plain_console()
    log = tmp_path / "log"
    script = "cat > {0}/stdin; echo 'I: running apt-get update...'; echo 'Setting up x ...'; echo 'I: done'"
    with open(log, "w") as fh, rootfs.RootfsProgress("arm64", console, interval=1e9) as p:
        rc = rootfs._run_logged(["sh", "-c", script.format(tmp_path)], "deb http://x bookworm main\n", fh, p)
    assert rc == 0 and (tmp_path / "stdin").read_text() == "deb http://x bookworm main\n"
    assert log.read_text() == "I: running apt-get update...\nSetting up x ...\nI: done\n"
    assert p.packages == 1 and buf.getvalue().splitlines()[-1].startswith("[rootfs arm64] done: 1 packages set up")
