"""Probe tools: rendering, and parsers checked against real bpftrace output (golden files)."""

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import InputError
from harness.probes import bpftrace_json, render, wakeup_latency

GOLDEN = Path(__file__).parent / "golden"


def test_render_filters_on_the_comm_prefix():
    text = render("wakeup_latency", comm_prefix="agent-")
    assert 'strncmp(args->comm, "agent-", 6) == 0' in text
    assert "tracepoint:sched:sched_waking" in text and "tracepoint:sched:sched_switch" in text
    assert 'strncmp(args->comm, "w-", 2) == 0' in render("wakeup_latency", comm_prefix="w-")


def test_unknown_probe_is_an_input_error():
    with pytest.raises(InputError, match="not implemented yet"):
        render("nope")


def test_probes_render_cli_writes_a_standalone_script(tmp_path, capsys):
    out = tmp_path / "w.bt"
    assert main(["probes", "render", "wakeup_latency", "-o", str(out)]) == 0
    assert out.read_text().startswith("#!/usr/bin/env bpftrace")
    assert "bpftrace -f json" in capsys.readouterr().out


def test_wakeup_latency_golden():
    """Output captured from bpftrace 0.17 in an x86_64 guest running agentloop."""
    out = bpftrace_json.read(GOLDEN / "wakeup_latency.json")
    assert out.attached == 3
    recs = wakeup_latency.records(out)
    assert [(r.tid, r.cpu, r.waking_ns, r.latency_ns, r.cpu_was_idle) for r in recs] == [
        (107, 0, 4466571721, 6018, True), (107, 0, 4471300877, 11883, False),
        (107, 0, 4472466048, 6892, True), (107, 0, 4473652890, 5957, True)]
    s = wakeup_latency.summary(recs)
    assert s["events"] == 4 and s["idle_cpu_fraction"] == 0.75
    assert s["p50_us"] == pytest.approx((6.018 + 6.892) / 2)
    csv = wakeup_latency.to_csv(recs).splitlines()
    assert csv[0] == "tid,cpu,waking_ns,running_ns,latency_ns,cpu_was_idle" and len(csv) == 5


def test_parser_rejects_garbage():
    with pytest.raises(bpftrace_json.ProbeOutputError, match=":2: not JSON"):
        bpftrace_json.parse('{"type": "attached_probes", "data": {"probes": 1}}\nnot json\n', "x")
    with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
        wakeup_latency.records(bpftrace_json.parse('{"type": "printf", "data": "1 2 3\\n"}'))


def test_dvfs_ramp_pairs_wakeups_runs_and_frequency_changes():
    from harness.probes import dvfs_ramp

    out = bpftrace_json.BpftraceOutput(printf=[
        "S 7 0 50",                 # running when the probe attached: no record
        "W 7 1000", "R 7 1 1100 800000", "F 1 1300 1600000", "F 1 1500 3200000", "S 7 1 2100",
        "F 0 2200 800000",          # another CPU, no agent on it: ignored
        "W 7 3000", "R 7 0 3050 0", "S 7 0 3550",   # first frequency on cpu0 comes from the context
        "R 7 1 4000 3200000", "S 7 1 4500",         # preempted and resumed: no wakeup
    ])
    runs = dvfs_ramp.records(out, {"cur_khz": {0: 2400000}})
    first, second, third = runs
    assert (first.cpu, first.start_khz, first.max_khz, first.changes) == (1, 800000, 3200000, 2)
    assert first.ramp_ns == 1500 - 1000          # from the wakeup to reaching 3.2 GHz
    # 200 ns at 0.8, 200 at 1.6, 600 at 3.2 GHz
    assert first.mean_khz == pytest.approx((200 * 800000 + 200 * 1600000 + 600 * 3200000) / 1000)
    assert (second.start_khz, second.max_khz, second.ramp_ns, second.changes) == (800000, 800000, 0, 0)
    assert third.waking_ns is None
    s = dvfs_ramp.summary(runs)
    assert s["runs"] == 2 and s["runs_with_freq_change"] == 1 and s["freq_changes"] == 2
    assert s["ramp_p50_us"] == pytest.approx(0.5)
    with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
        dvfs_ramp.records(bpftrace_json.BpftraceOutput(printf=["X 1 2"]))


def test_wakeup_latency_agrees_with_the_loop_step_by_step():
    """A real x86_64 guest run (sim platform, schedutil + menu): every measured step's wakeup is in
    the probe, the kernel's wakeup-to-run never exceeds the loop's signal-to-running, and the loop
    sees at most 15 us more at p50 (the futex syscall entry on the world side and return on the agent's):
    the stated tolerance."""
    import numpy as np

    from harness.analysis.steps import read_steps_csv

    recs = wakeup_latency.records(bpftrace_json.read(GOLDEN / "agreement-wakeup_latency.json"))
    cols = read_steps_csv(GOLDEN / "agreement-steps.csv", 0)
    a = wakeup_latency.agree(recs, cols["signal_ns"], cols["wake_ns"])
    assert a.steps == 300 and a.matched == a.steps   # the measured steps (warm-up dropped)
    assert (a.excess_us >= 0).all()
    assert np.percentile(a.excess_us, 50) <= 15 and np.percentile(a.excess_us, 99) <= 40
    # and the two see the same thing: per-step latencies move together
    assert np.corrcoef(a.loop_us, a.probe_us)[0, 1] > 0.95


def test_agent_window_golden():
    """bpftrace 0.17 in an x86_64 CONFIG_AGENT_LATENCY=y guest, marked agent (window 5000 us)."""
    from harness.probes import agent_window

    out = bpftrace_json.read(GOLDEN / "agent_window.json")
    assert out.attached == 6
    ev = agent_window.records(out)
    assert ev.opens[0] == (190, 1, 7222570842, 5000, False)
    assert ev.closes[0] == (190, 1, 7223802863, 1231957)         # closed when the agent blocked
    assert (ev.placements, ev.preemptions) == (8, 1)
    assert ev.boosts == {0: 378, 1: 349} and ev.guards == {0: 617, 1: 774}
    s = agent_window.summary(ev)
    assert s["windows_opened"] == 11 and 1200 < s["open_p50_us"] < 1260   # ~ the 1.2 ms compute at fmax
    assert "close,190,1,7223802863,1231957" in agent_window.to_csv(ev)


def test_dvfs_ramp_golden():
    """bpftrace 0.17 in an arm64 guest: schedutil, 100 ms waits, 2.4M-instruction steps
    (the calibration's schedutil cell). The CPU idles at 0.8 GHz; each wakeup ramps it."""
    from harness.probes import dvfs_ramp

    out = bpftrace_json.read(GOLDEN / "dvfs_ramp.json")
    assert out.attached == 5
    runs = dvfs_ramp.records(out, {"cur_khz": {0: 800000, 1: 800000}})
    second = runs[1]
    assert (second.tid, second.cpu, second.start_khz, second.max_khz, second.changes) == (323, 1, 800000, 2400000, 2)
    assert second.ramp_ns == 1232432 and 2.3e6 < second.mean_khz < 2.4e6
    s = dvfs_ramp.summary(runs)
    assert s["runs"] == 25 and s["runs_with_freq_change"] == 21 and s["ramped_fraction"] == pytest.approx(0.84)
