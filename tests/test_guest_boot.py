"""Booting real kernels: the loop's numbers are sane, failures are contained, runs resume,
Ctrl-C leaves no QEMU behind. Marked `kernel`: each boot takes 20-60 s under TCG."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness import paths
from harness.guest import platform
from harness.runner import Runner
from harness.spec import load_experiment

pytestmark = pytest.mark.kernel

KERNEL = textwrap.dedent("""\
    kernel: {source: debian, series: [sim-platform, agent-latency],
             fragments: [base, tracing, platform, sim-platform], agent_latency: false}
    arch: [x86_64]
    machine: {cpus: 2, memory: 1G, accel: auto, timing: auto, run_timeout_s: 300}
""")


def experiment(tmp_path, name, body):
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"name: {name}\n" + KERNEL + textwrap.dedent(body))
    return load_experiment(f)


@pytest.mark.extended
def test_injected_delay_shows_up_in_step_latency_and_runs_resume(tmp_path):
    le = experiment(tmp_path, "inject", """\
        workload: {steps: 200, warmup: 20, compute_units: 50000, wait: {kind: eventfd, us: 1000}}
        # a fixed frequency and one shallow idle state: a longer idle must not change the step's cost
        platform: {governor: performance, disabled_cstates: [POLL, C3, C6]}
        variants:
          - {name: plain}
          - {name: delayed, set: {workload.inject_delay_us: 5000}}
    """)
    out = Runner(le, tmp_path / "results").run()
    assert [o.status for o in out] == ["ok", "ok"], [o.reason for o in out]
    plain, delayed = (o.stats for o in out)
    assert plain["steps"] == delayed["steps"] == 200
    gap = delayed["step_p50_us"] - plain["step_p50_us"]
    assert 4500 <= gap <= 5500, (plain, delayed)
    meta = json.loads((out[0].dir / "result.json").read_text())
    assert meta["schema_version"] == 1 and meta["guest"]["backend"] == "vng"
    assert meta["guest"]["accel"] in ("kvm", "tcg") and meta["guest"]["timing"] in ("virtual", "realtime")
    assert meta["kernel"]["release"].startswith("6.12.") and meta["guest"]["host"]["qemu"].startswith("QEMU")
    assert meta["guest"]["boot_to_workload_s"] > 0 and (out[0].dir / "console.log").stat().st_size > 1000
    assert (out[0].dir / "steps.csv").read_text().count("\n") == 201
    # the meter's busy time per frequency: at `performance` every busy us is at fmax, and busy time
    # x frequency is the cycles the meter counts (both integrate the same spans)
    snaps = [platform.parse_snapshot((out[0].dir / "guest" / f"platform-r0-{w}.txt").read_text()) for w in
             ("before", "after")]
    d = platform.delta(*snaps)
    fmax = max(snaps[1].available_khz)
    assert d.busy_freq_time_s[fmax] > 0.05 and all(t == 0 for k, t in d.busy_freq_time_s.items() if k != fmax), d
    cycles = snaps[1].cycles - snaps[0].cycles
    assert sum(k * 1e3 * t for k, t in d.busy_freq_time_s.items()) == pytest.approx(cycles, rel=0.001)
    assert sum(d.busy_freq_time_s.values()) <= d.active_us / 1e6
    run_dir = out[0].dir.parent
    assert (run_dir / "latency_cdf.png").stat().st_size > 10_000 and (run_dir / "summary.txt").is_file()

    t0 = time.monotonic()
    again = Runner(le, tmp_path / "results").run()
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert time.monotonic() - t0 < 30


def test_panic_and_hang_are_contained_with_their_console_logs(tmp_path):
    """A real kernel panic and a real hang, each failing its own cell; the next cell runs (that the
    run goes on past any failure is tested on the fake backend, tests/test_runner_fake.py)."""
    le = experiment(tmp_path, "failures", """\
        workload: {steps: 20, warmup: 0, compute_units: 1000, wait: {kind: futex, us: 500}}
        variants:
          - {name: panic, set: {machine.cmdline: ["mem=20M"]}}   # the kernel runs out of memory at boot
          - {name: hang, set: {workload.wait.us: 300000000, machine.run_timeout_s: 20}}
    """)
    panic, hang = Runner(le, tmp_path / "results").run()
    assert panic.status == "failed" and "kernel panic before the workload started" in panic.reason
    assert "System is deadlocked on memory" in panic.reason
    assert "console log:" in panic.reason and panic.record.infra_failures == 0
    assert hang.status == "failed" and "timed out during the workload" in hang.reason
    for o in (panic, hang):
        assert json.loads((o.dir / "result.json").read_text())["status"] == "failed"
        assert "Linux version 6.12" in (o.dir / "console.log").read_text()


def qemu_pids(marker: str) -> list[int]:
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmd and marker in cmd:
                pids.append(int(p))
    return pids


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # as a background job of a non-interactive shell


@pytest.mark.parametrize("sig,inherit_ignored,code", [
    (signal.SIGTERM, False, 143),           # how a user stops a background job
    (signal.SIGINT, True, 130),             # Ctrl-C / kill -INT of a run started with SIGINT ignored
    (signal.SIGKILL, False, -9),            # the harness gets no say: its reaper ends the guest
], ids=["SIGTERM", "SIGINT-inherited-ignored", "SIGKILL"])
def test_stopping_the_harness_leaves_no_qemu_behind(tmp_path, sig, inherit_ignored, code):
    f = tmp_path / "long.yaml"
    f.write_text("name: long\n" + KERNEL + "workload: {steps: 100000, warmup: 0, wait: {kind: futex, us: 1000}}\n")
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(f), "--results-dir", str(results)],
                            cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_ignore_sigint if inherit_ignored else None)
    marker = str(results)
    deadline = time.monotonic() + 240
    while not qemu_pids(marker) and time.monotonic() < deadline:
        time.sleep(1)
    assert qemu_pids(marker), "the guest never started"
    time.sleep(3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while qemu_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert qemu_pids(marker) == []
    assert proc.returncode == code


@pytest.mark.extended
def test_cli_smoke_run(tmp_path, capsys):
    """experiments/smoke.yaml through the real CLI, on the stock (agent-off) kernel. Extended: CI's
    end-to-end run through the CLI, with the same probe, is test_agent_window_x86_64."""
    from harness.cli import main

    code = main(["run", str(paths.EXPERIMENTS_DIR / "smoke.yaml"), "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = tmp_path.iterdir()
    result = json.loads((run_dir / "x86_64-base" / "result.json").read_text())
    assert result["status"] == "ok" and result["stats"]["steps"] == 300
    assert "x86_64-base" in out and "wake p50" in out
    # the probe ran next to the loop: at least one agent wakeup per step (warm-up included)
    probe = result["probes"]["wakeup_latency"]
    assert probe["events"] >= 330 and 0 < probe["p50_us"] < result["stats"]["step_p50_us"]
    rows = (run_dir / "x86_64-base" / "probe-wakeup_latency.csv").read_text().splitlines()
    assert len(rows) == probe["events"] + 1


@pytest.mark.extended
def test_probe_that_cannot_attach_names_itself_and_the_symbol(tmp_path, monkeypatch):
    import harness.probes

    monkeypatch.setattr(harness.probes, "render",
                        lambda name, comm_prefix="agent-": "tracepoint:sched:sched_no_such_event { }\n")
    le = experiment(tmp_path, "badprobe", """\
        workload: {steps: 20, warmup: 0, compute_units: 1000, wait: {kind: futex, us: 500}}
        probes: [wakeup_latency]
    """)
    (out,) = Runner(le, tmp_path / "results").run()
    assert out.status == "failed"
    assert "probe wakeup_latency did not attach" in out.reason
    assert "sched_no_such_event" in out.reason
