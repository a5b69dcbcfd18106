"""The runner end to end on the fake backend: recorded guest outputs of real x86_64 and arm64 runs
(tests/fixtures/guest, made by scripts/record_guest_fixtures.py) replayed, so resume, retries,
every kind of failure, result assembly, the run index, the offline report and a hostile guest
are tested in seconds. Real boots stay in test_guest_boot.py and friends."""

import json
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness import procs, records
from harness.analysis.report import write_run_report
from harness.cli import main
from harness.errors import InputError
from harness.guest import protocol
from harness.guest.fake import FakeBackend, FakeKernels, recording_meta
from harness.probes import bpftrace_json
from harness.records import CellResult, RunIndex
from harness.runner import Runner
from harness.spec import load_experiment

FIXTURES = Path(__file__).parent / "fixtures" / "guest"
GOLDEN = Path(__file__).parent / "golden"
RECORDINGS = {arch: FIXTURES / arch for arch in ("x86_64", "arm64")}


def experiment(tmp_path, body="", arch="[x86_64, arm64]", name="fake"):
    """The recording's experiment (same workload, repeats and probes), with extra variants."""
    base = (FIXTURES / "recording.yaml").read_text().replace("name: recording", f"name: {name}")
    base = base.replace("arch: [x86_64, arm64]", f"arch: {arch}")
    f = tmp_path / f"{name}.yaml"
    f.write_text(base + textwrap.dedent(body))
    return load_experiment(f)


def runner(tmp_path, le, backend=None, kernels=None, **kw):
    backend = backend or FakeBackend(RECORDINGS)
    kernels = kernels or FakeKernels(tmp_path / "kernels")
    r = Runner(le, tmp_path / "results", cache=_cache(tmp_path), backend=backend, builder=kernels, **kw)
    return r, backend, kernels


def _cache(tmp_path):
    from harness.kernel.cache import BuildCache

    return BuildCache(tmp_path / "cache")


def files_under(root: Path) -> list[Path]:
    """Every regular file under root, links not followed."""
    out = []
    for dirpath, _dirs, filenames in os.walk(root, followlinks=False):
        for n in filenames:
            p = Path(dirpath) / n
            if not p.is_symlink() and p.is_file():
                out.append(p)
    return out


# -- recordings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_recordings_are_real_guest_output_of_todays_protocol(arch):
    """A recording is only worth replaying if the guest that made it ran the script the harness
    renders now (re-record with scripts/record_guest_fixtures.py after a protocol change)."""
    meta = recording_meta(RECORDINGS[arch])
    assert meta["arch"] == arch and meta["kernel_release"].startswith("6.12")
    assert meta["timing"] in ("virtual", "realtime")
    status = protocol.parse_status((RECORDINGS[arch] / protocol.STATUS).read_text())
    assert status[protocol.Key.WORKLOAD_EXIT] == "0" and status[protocol.Key.KERNEL].startswith("6.12")
    # the guest's bpftrace said every probe was attached before the traced run started
    probed = sorted(f.name.removeprefix("probe-").removesuffix(".err") for f in RECORDINGS[arch].glob("probe-*.err"))
    assert probed == ["dvfs_ramp", "wakeup_latency"]     # tests/fixtures/guest/recording.yaml's
    for name in probed:
        said = ((RECORDINGS[arch] / protocol.probe_stderr(name)).read_text() +
                (RECORDINGS[arch] / protocol.probe_output(name)).read_text())
        assert bpftrace_json.ATTACHED_NOTICE in said, name


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_recorded_script_is_the_one_rendered_today(tmp_path, arch):
    le = experiment(tmp_path, arch=f"[{arch}]")
    (plan,) = runner(tmp_path, le)[0].plan()
    assert (RECORDINGS[arch] / protocol.GUEST_SCRIPT).read_text() == plan.script


# -- a whole run -----------------------------------------------------------------------------------

def test_replayed_run_gives_records_index_and_summary(tmp_path, capsys):
    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le)
    out = r.run()
    assert [o.status for o in out] == ["ok", "ok"], [o.reason for o in out]
    for o in out:
        rec = records.read(o.dir / records.CELL_RESULT, CellResult)
        assert rec.schema_version == 1 and rec.status == "ok" and rec.stats.steps == 2 * 60
        assert rec.guest.backend == "fake" and rec.kernel.release == "6.12.0-fake"
        assert set(rec.probes) == {"wakeup_latency", "dvfs_ramp"} and rec.probed_run.steps == 60
        assert rec.platform.energy_uj > 0 and len(rec.platform.energy_per_step_by_repeat_uj) == 2
        assert (o.dir / records.CELL_STEPS).read_text().count("\n") == 121
        assert (o.dir / records.probe_records("wakeup_latency")).is_file()
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    assert index.complete and set(index.cells) == {"x86_64-base", "arm64-base"}
    assert index.invocations[-1].interrupted is False
    summary = (r.run_dir / records.SUMMARY).read_text()
    assert (r.run_dir / records.CDF_PLOT).stat().st_size > 10_000
    # the offline path re-derives the same summary from the records, without the runner
    (r.run_dir / records.SUMMARY).unlink()
    (r.run_dir / records.CDF_PLOT).unlink()
    assert main(["report", str(r.run_dir), "-o", str(tmp_path / "report.html")]) == 0
    assert (r.run_dir / records.SUMMARY).read_text() == summary
    assert (r.run_dir / records.CDF_PLOT).is_file()
    assert "x86_64-base" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()      # the HTML report reads what the runner writes today
    assert 'id="fig-tail-x86_64"' in page and 'id="fig-tail-arm64"' in page


def _normalised(rec: CellResult) -> dict:
    d = json.loads(rec.model_dump_json())
    for k in ("finished", "cell_wall_s", "fingerprint"):
        d.pop(k)
    d["kernel"]["image"] = "<image>"
    d["guest"]["workload_dir"] = "<tools>"
    d["attempts"] = [{**a, "wall_s": 0} for a in d["attempts"]]
    return d


def test_result_record_golden(tmp_path):
    """The record's shape and the figures out of a recorded x86_64 guest, field by field. A
    change here is a change of the results contract: bump SCHEMA_VERSION if readers must know.
    Regenerate with HARNESS_UPDATE_GOLDEN=1."""
    le = experiment(tmp_path, arch="[x86_64]", name="golden")
    (out,) = runner(tmp_path, le)[0].run()
    got = _normalised(out.record)
    path = GOLDEN / "record-x86_64.json"
    if os.environ.get("HARNESS_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


def test_resume_skips_ok_cells_and_redo_runs_them_again(tmp_path):
    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le)
    r.run()
    assert len(backend.runs) == 2
    again, backend2, _ = runner(tmp_path, le)
    assert [o.status for o in again.run()] == ["skipped", "skipped"] and backend2.runs == []
    redo, backend3, _ = runner(tmp_path, le, redo=True)
    assert [o.status for o in redo.run()] == ["ok", "ok"] and len(backend3.runs) == 2
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    assert len(index.invocations) == 3 and index.complete


def test_cell_subsets_accumulate_in_the_index(tmp_path):
    le = experiment(tmp_path)
    r, _, _ = runner(tmp_path, le, only=["x86_64"])
    r.run()
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    assert set(index.cells) == {"x86_64-base"} and not index.complete and index.cells_total == 2
    r2, _, _ = runner(tmp_path, le, only=["arm64"])
    r2.run()
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    assert set(index.cells) == {"x86_64-base", "arm64-base"} and index.complete


# -- failures --------------------------------------------------------------------------------------

def test_infrastructure_failures_are_retried_and_counted(tmp_path):
    le = experiment(tmp_path, arch="[x86_64]")
    r, backend, _ = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, attempts=["boot-failed", "oops-panic"]))
    (out,) = r.run()
    assert out.status == "ok" and out.record.infra_failures == 2
    assert [a.outcome for a in out.record.attempts] == ["boot-failed", "panic", "ok"]
    assert [a.console for a in out.record.attempts] == ["console.log", "console-1.log", "console-2.log"]
    assert all((out.dir / a.console).is_file() for a in out.record.attempts)

    le2 = experiment(tmp_path, arch="[x86_64]", name="down")
    r, backend, _ = runner(tmp_path, le2, backend=FakeBackend(RECORDINGS, attempts=["boot-failed"] * 3))
    (out,) = r.run()
    assert out.status == "failed" and out.record.failure == "boot-failed" and out.record.infra_failures == 3


@pytest.mark.parametrize("attempts,failure,words", [
    (["panic"], "panic", "kernel panic before the workload started: Kernel panic - not syncing: System is deadlocked"),
    (["timeout"], "hang", "guest timed out during the workload"),
])
def test_guest_failures_fail_the_cell_with_the_reason_and_the_next_cell_runs(tmp_path, attempts, failure, words):
    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, attempts=attempts))
    first, second = r.run()
    assert first.status == "failed" and first.record.failure == failure and words in first.reason
    assert "console log:" in first.reason and len(backend.runs) == 2   # a panic with its own message: no retry
    assert second.status == "ok"


def test_kernel_build_failure_fails_only_its_cells(tmp_path):
    le = experiment(tmp_path, """\
        variants:
          - {name: stock}
          - {name: agent, set: {kernel.agent_latency: true, workload.mark_agent: true}}
    """, arch="[x86_64]")
    kernels = FakeKernels(tmp_path / "k", fail={"agent-on": "make failed: kernel/sched/core.c:3702: error"})
    r, backend, _ = runner(tmp_path, le, kernels=kernels)
    stock, agent = r.run()
    assert stock.status == "ok"
    assert agent.status == "failed" and agent.record.failure == "kernel-build" and "core.c:3702" in agent.reason
    assert len(backend.runs) == 1


def _status_hook(line):
    def hook(share_dir: Path, attempt: int):
        with open(share_dir / protocol.STATUS, "a") as fh:
            fh.write(line + "\n")
    return hook


@pytest.mark.parametrize("hook,failure,words", [
    (_status_hook("workload_exit=139"), "workload-failed", "workload exited with 139"),
    (_status_hook("platform_mismatch=governor: policy0 reads 'powersave'"), "platform-failed",
     "platform knob did not hold: governor"),
])
def test_workload_and_platform_failures(tmp_path, hook, failure, words):
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.status == "failed" and out.record.failure == failure and words in out.reason


def test_probe_that_did_not_attach_quotes_bpftrace(tmp_path):
    def hook(share_dir, attempt):
        (share_dir / protocol.STATUS).write_text("workload_start=3.0\nprobe_failed=dvfs_ramp\nworkload_exit=4\n")
        (share_dir / protocol.probe_stderr("dvfs_ramp")).write_text(
            "ERROR: tracepoint not found: power:cpu_frequency_nope\n")
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.record.failure == "probe-failed"
    assert "probe dvfs_ramp did not attach: ERROR: tracepoint not found: power:cpu_frequency_nope" in out.reason


# -- corrupt and hostile guest output ---------------------------------------------------------------

def _replace(name, data: bytes):
    def hook(share_dir, attempt):
        (share_dir / name).unlink(missing_ok=True)
        (share_dir / name).write_bytes(data)
    return hook


@pytest.mark.parametrize("hook,words", [
    (_replace("steps-r1.csv", b"agent,step,warmup,wait_ns,signal_ns,wake_ns,phases_ns,done_ns,cpu\n"
                               b"0,0,1,1,1,1,1,1,0\n"), "steps-r1.csv: no measured steps (only warm-up rows)"),
    (_replace("steps-r0.csv", b"agent,step,warm"), "steps-r0.csv: unexpected header"),
    (_replace("probe-wakeup_latency.json", b'{"type": "attached_probes", "data": {"probes": 3}}\n[1, 2]\n'),
     "probe wakeup_latency: probe-wakeup_latency.json:2: not a bpftrace JSON object"),
    (_replace("probe-dvfs_ramp.json", b'{"type": "printf", "data": "W 1\\n"}\n'),
     "probe dvfs_ramp: dvfs_ramp: unexpected line 'W 1'"),
    (_replace("probe-wakeup_latency.json", b"[" * 200_000 + b"\n"), "not a bpftrace JSON line"),
    (_replace("probe-wakeup_latency.json", b'{"type": "attached_probes", "data": {"probes": 1e999}}\n'),
     "attached_probes without a probe count"),
    (_replace("steps-r0.csv", (FIXTURES / "x86_64" / "steps-r0.csv").read_bytes() + b"0,99,0,1,1,1,1,1,0\n"),
     "steps-r0.csv: 61 measured steps, the spec asks for 60"),
    (_replace("steps-r0.csv", b"agent,step,warmup,wait_ns,signal_ns,wake_ns,phases_ns,done_ns,cpu\n"
                               b"0,0,0,-5,1,1,1,1,0\n"), "a value outside"),
    (_replace("platform-r0-after.txt", b"/sys/devices/system/cpu/cpu0/cpuidle/state0/name:C1;reboot\n"),
     "idle state named"),
    (_replace("platform-r0-before.txt", b"/sys/devices/system/cpu/sim_power/energy_uj:\x00\xff\n"),
     "energy_uj: unexpected value"),
])
def test_corrupt_guest_output_fails_that_cell_with_a_reason(tmp_path, hook, words):
    le = experiment(tmp_path)
    calls = []

    def on_x86_only(share_dir, attempt):
        calls.append(share_dir)
        if "x86_64" in str(share_dir):
            hook(share_dir, attempt)
    x86, arm = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=on_x86_only))[0].run()
    assert x86.status == "failed" and x86.record.failure == "output-unreadable" and words in x86.reason, x86.reason
    assert arm.status == "ok"
    assert "x86_64-base" in (x86.dir.parent / records.SUMMARY).read_text()   # named in the summary


def _unlink(*names):
    def hook(share_dir, attempt):
        for n in names:
            (share_dir / n).unlink(missing_ok=True)
    return hook


def _deltas(share_dir: Path, names: list[tuple[str, str]]):
    from harness.guest import platform
    return [platform.delta(platform.parse_snapshot((share_dir / b).read_text(), b),
                           platform.parse_snapshot((share_dir / a).read_text(), a)) for b, a in names]


def test_the_energy_figures_are_the_loops_own_meter_over_the_measured_steps(tmp_path):
    """The recorded guest's loop metered its measured steps: the record's energy per step is that
    meter's delta over the steps, and the shell's whole-repeat figure is kept beside it."""
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le)[0].run()
    plat, w = out.record.platform, le.experiment.workload
    runs = [protocol.repeat_files(r) for r in range(2)]
    share_dir = out.dir / protocol.SHARE
    steps = _deltas(share_dir, [(f.meter_before, f.meter_after) for f in runs])
    whole = _deltas(share_dir, [(f.before, f.after) for f in runs])
    assert plat.meter == "steps"
    assert plat.energy_per_step_by_repeat_uj == [round(d.energy_uj / (w.agents * w.steps), 2) for d in steps]
    assert plat.repeat_energy_per_step_by_repeat_uj == [round(d.energy_uj / (w.agents * (w.steps + w.warmup)), 2)
                                                    for d in whole]
    assert all(0 < s.elapsed_s < a.elapsed_s for s, a in zip(steps, whole, strict=True))
    assert plat.elapsed_s == pytest.approx(sum(d.elapsed_s for d in steps), abs=1e-3)


def test_a_recording_without_the_loops_meter_is_metered_over_whole_repeats(tmp_path):
    runs = [protocol.repeat_files(r) for r in range(2)]
    gone = [n for f in runs for n in (f.meter_before, f.meter_after)]
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=_unlink(*gone)))[0].run()
    plat, w = out.record.platform, le.experiment.workload
    whole = _deltas(out.dir / protocol.SHARE, [(f.before, f.after) for f in runs])
    assert out.status == "ok" and plat.meter == "repeat" and plat.repeat_energy_per_step_by_repeat_uj == []
    whole_steps = w.agents * (w.steps + w.warmup)
    assert plat.energy_per_step_by_repeat_uj == [round(d.energy_uj / whole_steps, 2) for d in whole]


def test_a_run_that_lost_half_its_meter_fails_the_cell_naming_the_file(tmp_path):
    le = experiment(tmp_path, arch="[x86_64]")
    hook = _unlink(protocol.repeat_files(1).meter_after)
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.status == "failed" and out.record.failure == "output-unreadable"
    assert "meter-r1-after.txt: missing" in out.reason, out.reason


SECRET = "host-secret-4f1c9a"


def test_a_guest_that_links_every_file_the_host_opens_leaks_nothing(tmp_path):
    """The guest replaces every file the host reads with a link to a host secret, and the share's
    subdirectory with a link to a host directory: the host follows none, copies nothing of the
    secret anywhere, writes nowhere outside the run directory, and the run goes on."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    # the status file too, in the retry test below; here the guest reports a finished loop
    names = [n for n in protocol.host_reads(2, ["wakeup_latency", "dvfs_ramp"], "separate") if n != protocol.STATUS]

    def hook(share_dir, attempt):
        if "x86_64" not in str(share_dir):
            return
        for n in names:
            (share_dir / n).unlink(missing_ok=True)
            (share_dir / n).symlink_to(secret)
        for n in ("probes", protocol.GUEST_SCRIPT, "console-1.log"):
            p = share_dir / n
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                import shutil
                shutil.rmtree(p)
            p.symlink_to(victim)
    le = experiment(tmp_path)
    x86, arm = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert x86.status == "failed" and "symbolic link (not followed)" in x86.reason
    assert arm.status == "ok"
    assert secret.read_text() == SECRET + "\n" and list(victim.iterdir()) == []
    for f in files_under(tmp_path / "results"):
        assert SECRET not in f.read_text(errors="replace"), f


def test_a_linked_status_file_counts_as_nothing_reported(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("workload_start=1\nworkload_exit=0\n")

    def hook(share_dir, attempt):
        (share_dir / protocol.STATUS).unlink()
        (share_dir / protocol.STATUS).symlink_to(secret)
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.status == "failed" and out.record.failure == "boot-failed"


def test_links_planted_before_a_retry_are_not_written_through(tmp_path):
    """Attempt 1 dies before the workload after planting links where the host writes next time
    (the guest script, the probes' directory, the next console log): the retry starts from a new
    share and a new console file, and the victims stay untouched."""
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("untouched\n")
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()

    def hook(share_dir, attempt):
        if attempt == 0:
            import shutil
            (share_dir / protocol.GUEST_SCRIPT).unlink()
            (share_dir / protocol.GUEST_SCRIPT).symlink_to(victim_file)
            shutil.rmtree(share_dir / protocol.PROBES_DIR)
            (share_dir / protocol.PROBES_DIR).symlink_to(victim_dir)
            (share_dir / "console-1.log").symlink_to(victim_file)
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, attempts=["boot-failed"], hostile=hook))[0].run()
    assert out.status == "ok" and out.record.infra_failures == 1
    assert victim_file.read_text() == "untouched\n" and list(victim_dir.iterdir()) == []


def test_huge_files_and_fifos_are_refused_without_reading_them(tmp_path):
    def hook(share_dir, attempt):
        if "x86_64" in str(share_dir):
            for n in ("steps-r0.csv", protocol.STATUS):
                (share_dir / n).unlink()
            with open(share_dir / "steps-r0.csv", "wb") as fh:   # sparse: 4 GiB that take no disk
                fh.truncate(4 << 30)
            (share_dir / protocol.STATUS).write_text("workload_start=3.0\nworkload_exit=0\n" + "x" * (1 << 20))
        elif "arm64" in str(share_dir):
            (share_dir / "steps-r1.csv").unlink()
            os.mkfifo(share_dir / "steps-r1.csv")
    le = experiment(tmp_path)
    x86, arm = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    # the status file over its cap counts as nothing reported: the guest never started (retried)
    assert x86.status == "failed" and x86.record.failure == "boot-failed" and x86.record.infra_failures == 3
    assert arm.status == "failed" and "steps-r1.csv: not a regular file" in arm.reason


def test_a_huge_steps_file_is_capped(tmp_path):
    def hook(share_dir, attempt):
        (share_dir / "steps-r0.csv").unlink()
        with open(share_dir / "steps-r0.csv", "wb") as fh:
            fh.truncate(4 << 30)
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.status == "failed" and "steps-r0.csv: 4294967296 bytes, more than the" in out.reason


def test_guest_text_in_messages_is_a_short_sanitised_excerpt(tmp_path):
    hook = _status_hook("platform_mismatch=\x1b[2J\x07" + "A" * 5000)
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.record.failure == "platform-failed"
    assert "\x1b" not in out.reason and "\x07" not in out.reason and len(out.reason) < 500


# -- inputs the runner refuses before anything is written -------------------------------------------

def test_refusals_leave_nothing_behind(tmp_path):
    le = experiment(tmp_path)
    results = tmp_path / "results"
    with pytest.raises(InputError, match="no cell id contains"):
        runner(tmp_path, le, only=["nomatch"])[0].run()
    for bad in ("../x", "a/b", ".hidden", "x" * 200, "a b", "$(id)"):
        with pytest.raises(InputError, match="run id"):
            runner(tmp_path, le, run_id=bad)
    spaced = tmp_path / "res ults"
    with pytest.raises(InputError, match="characters virtme-ng would pass to a shell"):
        Runner(le, spaced, cache=_cache(tmp_path), backend=FakeBackend(RECORDINGS),
               builder=FakeKernels(tmp_path / "k")).run()
    assert not results.exists() and not spaced.exists()


def test_a_run_directory_in_use_is_refused(tmp_path):
    import fcntl

    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le)
    r.run_dir.mkdir(parents=True)
    fd = os.open(r.run_dir / records.RUN_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(InputError, match="is in use by another"):
            r.run()
    finally:
        os.close(fd)
    assert backend.runs == [] and not (r.run_dir / records.RUN_INDEX).exists()


def test_a_run_directory_of_another_experiment_version_is_refused(tmp_path):
    le = experiment(tmp_path)
    runner(tmp_path, le, run_id="shared")[0].run()
    le2 = experiment(tmp_path, "# a comment changes the file, so the run id would differ\n")
    with pytest.raises(InputError, match="another version"):
        runner(tmp_path, le2, run_id="shared")[0].run()


def test_report_goes_on_past_corrupt_records(tmp_path):
    le = experiment(tmp_path)
    r, _, _ = runner(tmp_path, le)
    r.run()
    (r.run_dir / "arm64-base" / records.CELL_RESULT).write_text('{"schema_version": 1, "cell": "arm64-ba')
    (r.run_dir / "x86_64-base" / records.CELL_STEPS).write_text("garbage\n")
    rep = write_run_report(r.run_dir)
    assert rep.run.ok == [] and set(rep.run.problems) == {"arm64-base", "x86_64-base"}
    assert any("not JSON" in n for n in rep.notes)
    (r.run_dir / records.RUN_INDEX).write_text("{}")
    rep = write_run_report(r.run_dir)    # no usable index: the cell directories are scanned
    assert records.RUN_INDEX in rep.run.problems and set(rep.run.problems) >= {"arm64-base"}


@pytest.mark.parametrize("line", ["workload_exit=--1", "workload_exit=\u00b2", "workload_exit=99999999999",
                                  "setup_failed=[/x]", "platform_mismatch=[link=http://x]click[/link]"])
def test_odd_status_values_fail_the_cell_and_the_run_goes_on(tmp_path, line, capsys):
    """Exit codes that are not ASCII numbers, and reasons that look like Rich markup: the cell fails
    (or is judged on the rest of its status), nothing crashes, the summary and report still work."""
    def hook(share_dir, attempt):
        if "x86_64" in str(share_dir):
            with open(share_dir / protocol.STATUS, "a") as fh:
                fh.write(line + "\n")
    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))
    x86, arm = r.run()
    assert arm.status == "ok"
    assert x86.status == "failed" or line.startswith("workload_exit=99999")
    assert main(["report", str(r.run_dir)]) == 0


def test_device_nodes_fifos_and_setid_files_do_not_stay_on_the_host(tmp_path):
    """9p passes mknod and set-id bits through to the host: a device node where the host reads is
    refused without being opened for reading, and after the run the share holds only regular files
    and directories, none set-id."""
    import stat

    def hook(share_dir, attempt):
        (share_dir / "platform-r0-before.txt").unlink()
        os.mknod(share_dir / "platform-r0-before.txt", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(share_dir / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
        os.mkfifo(share_dir / "fifo")
        (share_dir / "rootsh").write_bytes(b"#!/bin/sh\n")
        os.chmod(share_dir / "rootsh", 0o4755)
        (share_dir / "link").symlink_to("/etc/shadow")
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=hook))[0].run()
    assert out.status == "failed" and "platform-r0-before.txt: not a regular file" in out.reason
    share_dir = out.dir / protocol.SHARE
    assert stat.S_IMODE(share_dir.stat().st_mode) == 0o700
    for dirpath, dirs, files in os.walk(share_dir):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), n
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), n
    assert (share_dir / "rootsh").is_file()


def test_a_share_nested_thousands_deep_is_still_reset_for_the_retry(tmp_path):
    def hook(share_dir, attempt):
        if attempt:
            return
        fd = os.open(share_dir, os.O_RDONLY)
        for _ in range(1500):   # deeper than Python's recursion limit
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(fd)
    le = experiment(tmp_path, arch="[x86_64]")
    (out,) = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, attempts=["boot-failed"], hostile=hook))[0].run()
    assert out.status == "ok" and out.record.infra_failures == 1
    assert not (out.dir / protocol.SHARE / "d").exists()


def test_a_run_directory_that_is_a_link_is_refused(tmp_path):
    le = experiment(tmp_path)
    r, backend, _ = runner(tmp_path, le)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r.run_dir.parent.mkdir(parents=True)
    r.run_dir.symlink_to(elsewhere)
    with pytest.raises(InputError, match="symbolic link"):
        r.run()
    assert list(elsewhere.iterdir()) == [] and backend.runs == []


def test_report_does_not_hang_on_a_fifo_and_finds_unindexed_records(tmp_path):
    le = experiment(tmp_path)
    r, _, _ = runner(tmp_path, le)
    r.run()
    steps = r.run_dir / "x86_64-base" / records.CELL_STEPS
    steps.unlink()
    os.mkfifo(steps)
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    del index.cells["arm64-base"]           # killed between the cell record and the index
    records.write(r.run_dir / records.RUN_INDEX, index)
    rep = write_run_report(r.run_dir)
    assert [c.id for c in rep.run.ok] == ["arm64-base"]
    assert "steps unusable" in rep.run.problems["x86_64-base"]


class _Overlap(FakeBackend):
    """A fake guest that takes a moment and counts how many run at once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def run(self, *a, **kw):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.3)
        try:
            with self.lock:      # the recording's replay counts attempts by len(self.runs)
                return super().run(*a, **kw)
        finally:
            with self.lock:
                self.now -= 1


def test_jobs_boot_virtual_time_guests_side_by_side_and_record_the_same(tmp_path, capsys):
    body = """\
        variants:
          - {name: base}
          - {name: again, set: {workload.seed: 2}}
    """
    le = experiment(tmp_path, body)
    serial = _Overlap(RECORDINGS)
    r1, _, _ = runner(tmp_path / "one", le, backend=serial)
    one = r1.run()
    side = _Overlap(RECORDINGS)
    r2, _, _ = runner(tmp_path / "two", le, backend=side, jobs=2)
    two = r2.run()
    assert serial.most == 1 and side.most == 2
    assert [o.status for o in two] == ["ok"] * 4 and {o.cell.id for o in two} == {o.cell.id for o in one}
    by_id = {o.cell.id: o for o in one}
    for o in two:      # the same records, whatever ran beside them
        assert o.record.stats == by_id[o.cell.id].record.stats
    index = records.read(r2.run_dir / records.RUN_INDEX, RunIndex)
    assert index.complete and index.invocations[-1].jobs == 2
    assert records.read(r1.run_dir / records.RUN_INDEX, RunIndex).invocations[-1].jobs is None
    assert "jobs" not in (r1.run_dir / records.RUN_INDEX).read_text()   # a run without it is written as before
    assert "[jobs] 4 cells, 2 guests at a time" in capsys.readouterr().out


def test_jobs_leave_real_time_guests_one_at_a_time(tmp_path):
    le = experiment(tmp_path, """\
        variants:
          - {name: rt, set: {machine.timing: realtime}}
    """)
    side = _Overlap(RECORDINGS)
    r, _, _ = runner(tmp_path, le, backend=side, jobs=2)
    assert [o.status for o in r.run()] == ["ok", "ok"] and side.most == 1


def test_jobs_out_of_range_are_refused(tmp_path):
    le = experiment(tmp_path)
    with pytest.raises(InputError, match="--jobs 0"):
        runner(tmp_path, le, jobs=0)


class _StopsTheHarness(_Overlap):
    """A fake guest during which the harness gets SIGTERM (as procs' handler records it): the guest
    comes back as a boot that ended, as a killed QEMU would."""

    def __init__(self, *a, stop, **kw):
        super().__init__(*a, **kw)
        self.stop, self.started = stop, 0

    def run(self, *a, **kw):
        with self.lock:
            self.started += 1
        self.stop()
        return super().run(*a, **kw)


def test_jobs_stopped_by_a_signal_record_no_failure_and_take_no_further_cell(tmp_path, monkeypatch):
    body = """\
        variants:
          - {name: base}
          - {name: again, set: {workload.seed: 2}}
          - {name: third, set: {workload.seed: 3}}
    """
    le = experiment(tmp_path, body)
    backend = _StopsTheHarness(RECORDINGS, stop=lambda: monkeypatch.setattr(procs._State, "signum", signal.SIGTERM))
    r, _, _ = runner(tmp_path / "run", le, backend=backend, jobs=2)
    with pytest.raises(procs.Terminated):
        r.run()
    assert 1 <= backend.started <= 2          # the cells in flight, none taken after the stop
    assert not list(r.run_dir.glob(f"*/{records.CELL_RESULT}"))   # no cell recorded as failed
    index = records.read(r.run_dir / records.RUN_INDEX, RunIndex)
    assert index.invocations[-1].interrupted and not index.cells


SCX = """\
    variants:
      - name: scx
        set: {platform.sched_ext: scx_simple, kernel.fragments: [base, tracing, platform, sim-platform, sched-ext]}
"""


def test_a_sched_ext_cell_without_the_schedulers_in_its_kernel_fails_before_any_boot(tmp_path):
    le = experiment(tmp_path, SCX, arch="[x86_64]")
    r, backend, _ = runner(tmp_path, le)
    (out,) = r.run()
    assert out.status == "failed" and "platform.sched_ext scx_simple: the kernel build" in out.record.reason
    assert not backend.runs


def test_a_sched_ext_cell_gets_its_loader_and_fails_when_the_guest_does_not_run_it(tmp_path):
    """The loader goes into the share as an executable; the recorded guest shows no
    /sys/kernel/sched_ext, which is what a kernel that fell back to the fair class shows."""
    seen = {}

    def look(share_dir, attempt):
        f = share_dir / protocol.SCHED_EXT_BIN
        seen["mode"], seen["data"] = f.stat().st_mode & 0o777, f.read_bytes()

    le = experiment(tmp_path, SCX, arch="[x86_64]")
    r, backend, _ = runner(tmp_path, le, backend=FakeBackend(RECORDINGS, hostile=look),
                           kernels=FakeKernels(tmp_path / "kernels", sched_ext=True))
    (out,) = r.run()
    assert seen == {"mode": 0o755, "data": b"\x7fELF fake scx_simple"}
    assert "startscx scx_simple" in backend.runs[0]["script"]
    assert out.status == "failed" and "sched_ext scx_simple did not hold before repeat 0" in out.record.reason


def test_the_frontier_command_recomputes_what_the_runner_recorded_and_rewrites_only_a_change(tmp_path, capsys):
    """`python -m harness frontier` bounds each cell again from its share's steps files: on a fresh
    run it finds the runner's own figures (nothing rewritten); a record whose frontier was lost gets
    it back, byte for byte, and a record it cannot bound is named, not a traceback."""
    le = experiment(tmp_path, arch="[x86_64]", body="""
        variants:
          - {name: pinned, set: {workload.agent_cpu: 1}}
        """)
    (out,) = runner(tmp_path, le)[0].run()
    fr = out.record.platform.frontier
    # (the recording ran unpinned, so its "agent CPU" energy is not all the agent's: no eta check here)
    assert fr is not None and fr.per_step == le.experiment.workload.steps * le.experiment.repeats
    path = out.dir / records.CELL_RESULT
    before = path.read_bytes()
    assert main(["frontier", str(out.dir.parent)]) == 0
    assert "unchanged" in capsys.readouterr().out and path.read_bytes() == before
    rec = records.read(path, CellResult)
    rec.platform.frontier = None
    records.write(path, rec)
    assert main(["frontier", str(out.dir.parent)]) == 0
    assert "rewritten" in capsys.readouterr().out and path.read_bytes() == before
    (out.dir / protocol.SHARE / protocol.repeat_files(0).steps).write_text("not a steps file\n")
    assert main(["frontier", str(out.dir.parent)]) == 2
    cap = capsys.readouterr()
    assert "no frontier" in cap.out and "nothing to bound" in cap.err and "Traceback" not in cap.err
