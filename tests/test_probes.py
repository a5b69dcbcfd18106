"""Probe tools: rendering, and parsers checked against real bpftrace output (golden files)."""

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import InputError
from harness.probes import bpftrace_json, render, wakeup_latency
from harness.probes.context import LoopTimeline, ProbeContext

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
    runs = dvfs_ramp.records(out, ProbeContext(cur_khz={0: 2400000}))
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
    runs = dvfs_ramp.records(out, ProbeContext(cur_khz={0: 800000, 1: 800000}))
    second = runs[1]
    assert (second.tid, second.cpu, second.start_khz, second.max_khz, second.changes) == (323, 1, 800000, 2400000, 2)
    assert second.ramp_ns == 1232432 and 2.3e6 < second.mean_khz < 2.4e6
    s = dvfs_ramp.summary(runs)
    assert s["runs"] == 25 and s["runs_with_freq_change"] == 21 and s["ramped_fraction"] == pytest.approx(0.84)


def _timeline():
    # two steps of agent 0 in repeat 0, one in repeat 1: signal, wake, phases end, done
    cols = {"repeat": np.array([0, 0, 1]), "agent": np.array([0, 0, 0]),
            "signal_ns": np.array([100, 200, 1000]), "wake_ns": np.array([110, 210, 1010]),
            "phases_ns": np.array([120, 220, 1020]), "done_ns": np.array([150, 250, 1050])}
    return LoopTimeline.from_columns(cols)


def test_loop_timeline_phases():
    t = _timeline()
    assert [t.phase_at(ns) for ns in (50, 100, 115, 130, 160, 205, 260, 1005, 1015, 1040, 1100)] == [
        "outside", "wake", "phases", "compute", "wait", "wake", "outside", "wake", "phases", "compute", "outside"]
    assert t.phase_at(115, agent=3) == "outside"


def test_workqueue_delay_pairs_items_and_finds_the_wake_path():
    from harness.probes import workqueue_delay

    out = bpftrace_json.BpftraceOutput(printf=[
        "Q 4096 100 0 -1 vmstat_update events",
        "S 4096 130 0 vmstat_update", "E 4096 160 0",
        "E 4096 900 0",                    # an end whose start was lost: it must not stretch the item above
        "Q 8192 200 1 1 lru_add_drain_per_cpu mm_percpu_wq",
        "S 8192 205 1 lru_add_drain_per_cpu",
        "K 8192 209 7",                    # the work's worker wakes agent 7: on its wake path
        "E 8192 210 1", "D 8192 210 1",    # and returns while the woken agent waits on its CPU
        "S 12288 305 0 flush_to_ldisc", "E 12288 320 0", "D 12288 320 0",   # ran while an agent waited
        "S 16384 400 0 psi_avgs_work",     # queued before the probe attached, still running at the end
    ])
    items = workqueue_delay.records(out, ProbeContext(loop=_timeline()))
    vm, drain, tty, psi = items
    assert (vm.delay_ns, vm.runtime_ns, vm.workqueue, vm.on_wake_path) == (30, 30, "events", False)
    # its worker woke the agent, then finished on the agent's CPU while the agent waited to run
    assert drain.woke_agent and drain.delayed_agent and drain.delay_ns == 5
    assert tty.delayed_agent and not tty.woke_agent and tty.queue_ns is None
    assert psi.end_ns is None and psi.runtime_ns is None
    assert (vm.phase, drain.phase, tty.phase) == ("compute", "wake", "outside")
    s = workqueue_delay.summary(items)
    assert s["items"] == 4 and s["on_wake_path"] == 2
    assert s["wake_path_functions"] == ["flush_to_ldisc", "lru_add_drain_per_cpu"]
    assert s["delay_p50_us"] == pytest.approx(0.0175)
    assert "0x2000,lru_add_drain_per_cpu,mm_percpu_wq,1,1,1,200,205,210,5,5,1,1,wake" in workqueue_delay.to_csv(items)
    with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
        workqueue_delay.records(bpftrace_json.BpftraceOutput(printf=["S x 1 0 f"]))


def test_pagecache_counts_pages_by_file_and_phase():
    from harness.probes import pagecache

    dev = 254 << 20
    out = bpftrace_json.BpftraceOutput(printf=[
        f"D 112 5 agent-0 {dev} 12 0 0",          # fadvise evicts the file's first page
        f"A 113 5 agent-0 {dev} 12 0 2",          # the read brings 4 pages back (order 2): misses
        f"G 114 5 agent-0 {dev} 12 0 15",         # a 16-page read...
        f"G 115 5 agent-0 {dev} 12 8 15",         # ...reported again for its second batch: not recounted
        f"G 214 5 agent-0 {dev} 12 0 15",         # the next step's read: all hits
        f"F 230 5 agent-0 {dev} 99 3",            # a fault on another file while computing
    ])
    ctx = ProbeContext(loop=_timeline(), files={(dev, 12): "/tmp/scratch/agentloop-data-0"})
    recs = pagecache.records(out, ctx)
    assert [r.pages for r in recs] == [1, 4, 16, 0, 16, 1]
    s = pagecache.summary(recs)
    assert (s["lookups"], s["faults"], s["misses"], s["evicted"], s["hits"]) == (32, 1, 4, 1, 29)
    assert s["miss_ratio"] == pytest.approx(4 / 33)
    assert s["by_phase"]["phases"]["misses"] == 4 and s["by_phase"]["compute"]["faults"] == 1
    assert s["by_file"]["/tmp/scratch/agentloop-data-0"]["hit_ratio"] == pytest.approx(28 / 32)
    assert "254:0:99" in s["by_file"]
    with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
        pagecache.records(bpftrace_json.BpftraceOutput(printf=["G 1 2 agent-0 3 4"]))


def test_vfs_metadata_reads_slow_paths():
    from harness.probes import vfs_metadata

    out = bpftrace_json.BpftraceOutput(printf=[
        "O stat 5 agent-0 112 116 0 1 7 0 1 0 0",     # RCU walk, all in the dcache
        "O open 5 agent-0 116 119 0 1 7 0 1 0 0",
        "O stat 5 agent-0 121 142 1 2 8 1 2 1 1",     # missing name: dcache miss, ->lookup, ref walk
    ])
    recs = vfs_metadata.records(out, ProbeContext(loop=_timeline()))
    assert [r.phase for r in recs] == ["phases", "phases", "compute"]
    assert not recs[0].slowpath and recs[2].slowpath and recs[2].failed
    s = vfs_metadata.summary(recs)
    assert s["ops"] == 3 and s["ref_walk_fraction"] == pytest.approx(1 / 3)
    assert s["by_op"]["stat"]["fs_lookup_fraction"] == 0.5 and s["dentries_allocated"] == 1
    assert s["fastpath_cost_p50_us"] == pytest.approx(0.0035) and s["slowpath_cost_p50_us"] == pytest.approx(0.021)
    with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
        vfs_metadata.records(bpftrace_json.BpftraceOutput(printf=["O lstat 5 agent-0 1 2 0 1 1 0 1 0 0"]))


@pytest.mark.parametrize("name", ["workqueue_delay", "pagecache", "vfs_metadata"])
def test_summary_output_aggregates_in_the_kernel(name):
    events, summ = render(name, output="events"), render(name, output="summary")
    assert "printf(" in events and "printf(" not in summ
    assert "hist(" in summ or "sum(" in summ or "count()" in summ
    with pytest.raises(InputError, match="no 'summary' output"):
        render("wakeup_latency", output="summary")


def test_missing_kprobe_symbols_are_named_before_boot(tmp_path):
    from harness.probes import missing_symbols

    smap = tmp_path / "System.map"
    smap.write_text("ffffffff81000000 T filename_lookup\nffffffff81000100 t path_lookupat\n")
    miss = missing_symbols(["wakeup_latency", "vfs_metadata"], smap)
    assert list(miss) == ["vfs_metadata"] and "lookup_fast" in miss["vfs_metadata"]
    assert "filename_lookup" not in miss["vfs_metadata"]
    assert missing_symbols(["wakeup_latency"], tmp_path / "none") == {}


def test_pagecache_golden():
    """bpftrace 0.17 in an x86_64 guest (experiments/probes.yaml): 64 KiB read per step from a file on
    the ext4 scratch disk (vda, 254:0), evicted every 4th step. Pages come and go one 4 KiB folio at a
    time; each step's read is one 16-page lookup."""
    from harness.probes import pagecache

    out = bpftrace_json.read(GOLDEN / "pagecache.json")
    assert out.attached == 4
    recs = pagecache.records(out, ProbeContext(files={(254 << 20, 12): "/tmp/scratch/agentloop-data-0"}))
    assert recs[0].kind == "evict" and recs[0].file == "/tmp/scratch/agentloop-data-0" and recs[0].comm == "agent-0"
    s = pagecache.summary(recs)
    assert (s["lookups"], s["misses"], s["evicted"]) == (320, 80, 80)
    assert s["by_file"]["/tmp/scratch/agentloop-data-0"]["miss_ratio"] == 0.25


def _probe_cases():
    from harness.probes import PROBES, outputs
    return [(n, o) for n in PROBES for o in outputs(n)]


@pytest.mark.parametrize("name,output", _probe_cases())
def test_every_map_a_script_clears_or_reads_is_one_it_writes(name, output):
    """bpftrace refuses a script that names a map it never assigns ("Undefined map"); the host has no
    tracefs to load the scripts, so every rendered tool and output mode is checked here."""
    import re

    text = render(name, output=output)
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    key = r"(?:\[(?:[^\[\]]|\[[^\]]*\])*\])?"      # a map key, one level of nesting: @m[ksym(@f[tid])]
    written = set(re.findall(r"@(\w+)" + key + r"\s*(?:=(?!=)|\+=|-=)", code))
    used = set(re.findall(r"@(\w+)", code))
    assert used <= written, f"{name} ({output}): maps never assigned: {sorted(used - written)}"
