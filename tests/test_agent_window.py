"""The agent latency window in a booted CONFIG_AGENT_LATENCY=y guest: unmarked tasks see a stock
kernel (no window event at all), a marked agent gets windows, frequency boosts at its wakeups and
an idle guard while it waits, and its steps get faster. x86_64 in CI; arm64 opt-in."""

import json
import subprocess
import textwrap

import pytest
import yaml

from harness.runner import Runner
from harness.spec import load_experiment

EXPERIMENT = textwrap.dedent("""\
    name: agent_window_check
    kernel: {source: debian, series: [sim-platform, agent-latency],
             fragments: [base, tracing, platform, sim-platform], agent_latency: true}
    arch: [ARCH]
    machine: {cpus: 2, memory: 1G, accel: auto, timing: auto, run_timeout_s: 900}
    platform: {governor: schedutil, idle_governor: menu}
    workload:
      steps: 100
      warmup: 10
      compute_units: 100000
      wait: {kind: futex, distribution: exponential, us: 2000}
    probes: [agent_window]
    probe_run: in-repeats     # every cell carries the probe alike; no separate traced run
    variants:
      - {name: unmarked}
      - {name: marked, set: {workload.mark_agent: true, workload.window_us: 5000}}
      - {name: explicit, set: {workload.mark_agent: true, workload.explicit_windows: true,
                                workload.window_us: 5000}}
""")


def run_window_check(tmp_path, arch, variants=("unmarked", "marked", "explicit")):
    f = tmp_path / "agent_window_check.yaml"
    exp = yaml.safe_load(EXPERIMENT.replace("ARCH", arch))
    exp["variants"] = [v for v in exp["variants"] if v["name"] in variants]
    f.write_text(yaml.safe_dump(exp, sort_keys=False))
    out = Runner(load_experiment(f), tmp_path / "results").run()
    assert all(o.status == "ok" for o in out), [(o.cell.id, o.reason) for o in out]
    return {o.cell.variant: json.loads((o.dir / "result.json").read_text()) for o in out}


def check_window(cells):
    quiet = cells["unmarked"]["probes"]["agent_window"]
    assert quiet["windows_opened"] == 0 and quiet["freq_boosts"] == 0 and quiet["idle_guards"] == 0, quiet
    marked = cells["marked"]["probes"]["agent_window"]
    # 110 wakeups; a wakeup of a task that blocked while ineligible goes through ttwu_runnable()
    # and opens no window (DELAY_DEQUEUE, issue 13 item 3), the likely reason only 102 of 110 opened
    # on the x86-skl-client preset (not yet traced to it)
    assert marked["windows_opened"] >= 95 and marked["explicit_windows"] == 0, marked
    assert marked["freq_boosts"] > 0 and marked["idle_guards"] > 0, marked
    if "explicit" in cells:
        check_explicit(cells)
    stock, agent = cells["unmarked"]["stats"], cells["marked"]["stats"]
    assert agent["step_p50_us"] < stock["step_p50_us"], (stock, agent)
    assert agent["wake_p50_us"] < stock["wake_p50_us"], (stock, agent)
    fmax = str(cells["marked"]["spec"]["platform"]["sim"]["opps"][-1]["khz"])   # the boost goes to the top OPP
    assert cells["marked"]["platform"]["freq_residency"].get(fmax, 0) > \
        cells["unmarked"]["platform"]["freq_residency"].get(fmax, 0)


def check_explicit(cells):
    explicit = cells["explicit"]["probes"]["agent_window"]
    assert explicit["explicit_windows"] >= 110, explicit


@pytest.mark.kernel
def test_agent_window_x86_64(tmp_path):
    check_window(run_window_check(tmp_path, "x86_64", ("unmarked", "marked")))


@pytest.mark.kernel
@pytest.mark.extended
def test_explicit_windows_x86_64(tmp_path):
    """prctl OPEN/CLOSE around each step (the CI set covers the implicit windows at wakeups)."""
    check_explicit(run_window_check(tmp_path, "x86_64", ("explicit",)))


@pytest.mark.kernel
@pytest.mark.arm64
def test_agent_window_arm64(tmp_path):
    check_window(run_window_check(tmp_path, "arm64"))


def test_marking_needs_the_kernel_option(agentloop, tmp_path):
    """The host kernel has no CONFIG_AGENT_LATENCY: asking to mark fails loudly, never silently."""
    proc = subprocess.run([str(agentloop), "--steps", "3", "--warmup", "0", "--wait-us", "10", "--compute-units",
                           "10", "--mark-agent", "--out", str(tmp_path / "x.csv")], capture_output=True)
    assert proc.returncode == 2 and b"prctl(PR_AGENT_LATENCY)" in proc.stderr
