"""Probe tools: rendering, and parsers checked against real bpftrace output (golden files)."""

import re
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


def test_parser_takes_the_all_attached_notice_on_stdout():
    """bpftrace after 0.17 prints the notice the guest script waits for on stdout, among the JSON
    lines: it is read as the notice, and anything else that is not JSON is still an error."""
    text = ('{"type": "attached_probes", "data": {"probes": 1}}\n' + bpftrace_json.ATTACHED_NOTICE +
            '\n{"type": "printf", "data": "1 2 3\\n"}\n')
    out = bpftrace_json.parse(text, "x")
    assert out.attached == 1 and out.all_attached and out.printf == ["1 2 3"]
    assert not bpftrace_json.parse('{"type": "attached_probes", "data": {"probes": 1}}\n').all_attached
    with pytest.raises(bpftrace_json.ProbeOutputError, match=":2: not JSON"):
        bpftrace_json.parse(text.replace(bpftrace_json.ATTACHED_NOTICE, bpftrace_json.ATTACHED_NOTICE + "x"), "x")


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


def test_dvfs_ramp_khz_before_is_the_last_request_before_the_wakeup():
    """The frequency the CPU had been set to when the agent was woken: the last F event on the run's
    CPU before the wakeup (not one after it, not another CPU's), else the frequency from the context."""
    from harness.probes import dvfs_ramp

    out = bpftrace_json.BpftraceOutput(printf=[
        "F 1 200 2400000", "F 1 900 800000",         # the later one holds at the wakeup
        "F 0 950 3200000",                          # another CPU
        "W 7 1000", "F 1 1050 1600000",             # after the wakeup, before the run: not "before"
        "R 7 1 1100 1600000", "F 1 1300 3200000", "S 7 1 2100",
        "W 7 3000", "R 7 1 3100 3200000", "S 7 1 3600",   # nothing new since 1300
        "F 1 3900 1200000", "R 7 1 4000 1200000", "S 7 1 4500",   # preempted and resumed: at the run start
        "W 8 5000", "R 8 2 5100 0", "S 8 2 5600",   # cpu2: no event there
    ])
    runs = dvfs_ramp.records(out)
    assert [r.khz_before for r in runs] == [800000, 3200000, 1200000, None]
    assert (runs[0].start_khz, runs[0].max_khz, runs[0].changes) == (1600000, 3200000, 2)
    # a CPU without events has the frequency the platform snapshot saw before the probe attached
    with_ctx = dvfs_ramp.records(out, ProbeContext(cur_khz={2: 408000, 1: 4000000}))
    assert [r.khz_before for r in with_ctx] == [800000, 3200000, 1200000, 408000]


def test_wakeup_latency_agrees_with_the_loop_step_by_step():
    """A real x86_64 guest run (sim platform, schedutil + menu): every measured step's wakeup is in
    the probe, the kernel's wakeup-to-run never exceeds the loop's signal-to-running, and the loop
    sees at most 15 us more at p50 (the futex syscall entry on the world side and return on the agent's):
    the stated tolerance."""
    import numpy as np

    from harness.analysis.steps import parse_steps_csv

    recs = wakeup_latency.records(bpftrace_json.read(GOLDEN / "agreement-wakeup_latency.json"))
    cols = parse_steps_csv((GOLDEN / "agreement-steps.csv").read_text(), "agreement-steps.csv", 0)
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


def test_idle_guard_golden():
    """bpftrace 0.17 in an x86_64 CONFIG_AGENT_LATENCY=y guest, x86-skl-client (POLL, C1 2 us,
    C1E 10 us, C3 70 us, ... exit latencies): the guards cell of experiments/abuse_guard_residency.yaml,
    a marked agent with a 20 us tolerance next to an abuser thread per CPU with a 1 us one, three
    repeats traced. The guard's contract, read from what the governor chose: under a 1 us guard
    only POLL, under 20 us nothing past C1E; and the budget's charges per task, named."""
    from harness.probes import idle_guard

    out = bpftrace_json.read(GOLDEN / "idle_guard.json")
    assert out.attached == 6 and not out.printf            # five tracepoint blocks and END
    r = idle_guard.records(out)
    assert r.ns[(0, 0, 1)] == 34554241 and r.periods[(0, 0, 1)] == 674
    assert {state for (_c, state, tol) in r.ns if tol == 1} == {0}
    assert {state for (_c, state, tol) in r.ns if tol == 20} <= {0, 1, 2}
    assert max(state for (_c, state, tol) in r.ns if tol == idle_guard.UNGUARDED) == 8   # C10, unguarded
    assert r.comm == {99: "abuser", 100: "abuser", 190: "agent-0", 205: "agent-0", 220: "agent-0"}
    assert r.charged[(99, "guard")] == 24148767
    s = idle_guard.summary(r)
    assert s["poll_us_by_tolerance"]["1"] > 10 * s["poll_us_by_tolerance"]["-1"]
    assert s["idle_us"] == pytest.approx(sum(s["idle_us_by_state"].values()))
    assert s["guarded_idle_us"] == pytest.approx(s["idle_us_by_tolerance"]["1"] + s["idle_us_by_tolerance"]["20"])
    by = s["charged_us_by_comm"]
    assert set(by) == {"abuser", "agent-0"} and by["abuser"]["guard"] == pytest.approx((24148767 + 15434250) / 1000)
    assert "0,0,1,34554241,674" in idle_guard.to_csv(r).splitlines()
    with pytest.raises(bpftrace_json.ProbeOutputError, match="cpu,state,tolerance"):
        idle_guard.records(bpftrace_json.parse('{"type": "map", "data": {"@idle_ns": {"0,x,1": 5}}}'))
    # how many charges (probes since @charged_n): a guard is charged once, when it ends
    counted = idle_guard.records(bpftrace_json.parse(
        '{"type": "map", "data": {"@charged_n": {"7,guard": 3, "8,guard": 2}, '
        '"@comm": {"7": "abuser", "8": "abuser"}}}'))
    assert counted.charges == {(7, "guard"): 3, (8, "guard"): 2}
    assert idle_guard.summary(counted)["charges_by_comm"] == {"abuser": {"guard": 5}}
    assert not r.charges and s["charges_by_comm"] == {}      # the golden's bpftrace had no @charged_n yet
    with pytest.raises(bpftrace_json.ProbeOutputError, match="charged_ns"):
        idle_guard.records(bpftrace_json.parse('{"type": "map", "data": {"@charged_ns": {"7,boost": 5}}}'))


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


def _probes_golden_context() -> ProbeContext:
    """The loop's stamps of the run both golden files below come from (agent 0; its 5 warm-up
    steps are dropped, as the runner drops them)."""
    from harness.analysis.steps import parse_steps_csv

    cols = parse_steps_csv((GOLDEN / "probes-steps.csv").read_text(), "probes-steps.csv", 0)
    return ProbeContext(loop=LoopTimeline.from_columns(cols))


def test_workqueue_delay_golden():
    """bpftrace 0.17 in an x86_64 agent-off guest (experiments/probes.yaml's loop: 5 + 40 steps,
    agent on CPU 1, world on CPU 0, workqueue_delay and vfs_metadata attached together). Every work
    item of the guest is printed; none woke the agent or ran while it waited (no K or D line). The
    loop ended at 7686.6 ms; the lines after ~7712 ms come from the probe's stop: Q lines end there,
    S lines at 7746 ms, and E lines without their S follow until 7794 ms."""
    from collections import Counter

    from harness.probes import workqueue_delay

    out = bpftrace_json.read(GOLDEN / "workqueue_delay.json")
    assert out.attached == 7 and len(out.printf) == 136
    assert Counter(ln[0] for ln in out.printf) == {"Q": 37, "S": 43, "E": 56}
    items = workqueue_delay.records(out, _probes_golden_context())
    assert len(items) == 43                                       # one per S line
    first = items[0]   # Q 0xffff88800409bc40 6020007102 0 0 bpf_prog_free_deferred events; S ...994; E ...106
    assert (first.work, first.function, first.workqueue, first.queue_cpu, first.target_cpu, first.exec_cpu) == (
        0xFFFF88800409BC40, "bpf_prog_free_deferred", "events", 0, 0, 0)
    assert (first.queue_ns, first.start_ns, first.end_ns, first.delay_ns, first.runtime_ns) == (
        6020007102, 6020021994, 6020027106, 14892, 5112)
    by_start = {it.start_ns: it for it in items}
    netfs = by_start[6226374842]          # unbound (target -1): queued from CPU 0, run on CPU 1
    assert (netfs.function, netfs.workqueue, netfs.queue_cpu, netfs.target_cpu, netfs.exec_cpu) == (
        "netfs_write_collection_worker", "events_unbound", 0, -1, 1)
    assert netfs.delay_ns == 6226374842 - 6226262124
    ext4 = by_start[7447372986]           # its E comes after other items' Q/S/E lines
    assert (ext4.function, ext4.queue_cpu, ext4.exec_cpu, ext4.runtime_ns) == (
        "ext4_end_io_rsv_work", 1, 0, 7447618773 - 7447372986)
    # blk_mq_requeue_work queued again while it ran (Q ...789273 before E ...795882): two items
    requeue = [it for it in items if it.function == "blk_mq_requeue_work"]
    assert len(requeue) == 6 and {it.work for it in requeue} == {0xFFFF8880035A81E8}
    assert [(it.queue_ns, it.start_ns, it.end_ns) for it in requeue[-2:]] == [
        (7448522307, 7448781799, 7448795882), (7448789273, 7448797956, 7448803030)]
    # loop phases: the one item inside the measured steps ran while the agent waited
    # (step 37 done at 7650346064, step 38 signalled at 7652773601)
    assert Counter(it.phase for it in items) == {"outside": 42, "wait": 1}
    (waiting,) = [it for it in items if it.phase == "wait"]
    assert (waiting.function, waiting.start_ns) == ("wb_update_bandwidth_workfn", 7650478011)
    assert {it.phase for it in items if it.function == "netfs_write_collection_worker"} == {"outside"}
    # the probe's stop: 6 items started after the last Q line; the lone E lines make no item and
    # stretch none (the longest run is ext4's)
    unqueued = [it for it in items if it.queue_ns is None]
    assert Counter(it.function for it in unqueued) == {"process_srcu": 3, "srcu_invoke_callbacks": 2,
                                                       "bpf_prog_free_deferred": 1}
    assert all(it.start_ns > 7711273875 and it.workqueue is None for it in unqueued)
    assert all(it.end_ns is not None for it in items) and max(it.runtime_ns for it in items) == ext4.runtime_ns
    assert not any(it.on_wake_path for it in items)
    s = workqueue_delay.summary(items)
    assert (s["items"], s["functions"], s["on_wake_path"], s["woke_agent"], s["delayed_agent"]) == (43, 12, 0, 0, 0)
    assert s["by_phase"] == {"outside": 42, "wait": 1} and s["wake_path_functions"] == []
    # 37 delays: the median (19th) is wb_workfn's 6685425702 - 6685363322; 43 runtimes: the 22nd
    assert s["delay_p50_us"] == pytest.approx(62.380) and s["runtime_p50_us"] == pytest.approx(3.973)
    top = s["top_functions"][0]
    assert (top["function"], top["items"]) == ("netfs_write_collection_worker", 14)
    bpf = next(f for f in s["top_functions"] if f["function"] == "bpf_prog_free_deferred")
    assert bpf["items"] == 7 and bpf["delay_max_us"] == pytest.approx((7386227935 - 7383024793) / 1000)
    csv = workqueue_delay.to_csv(items).splitlines()
    assert len(csv) == 44 and csv[1] == (
        "0xffff88800409bc40,bpf_prog_free_deferred,events,0,0,0,6020007102,6020021994,6020027106,14892,5112,0,0,outside")


def test_vfs_metadata_golden():
    """The same run: each step stats the 6-deep path's leaf (/tmp/scratch/agentloop-tree-0/d0/../d5/leaf,
    10 components), opens it, and stats a name that never exists in d5. Under TCG's virtual time
    every step costs the same: 18.093 us per stat, 18.781 us per open, ~21.5 us per missing name."""
    from collections import Counter

    from harness.probes import vfs_metadata

    out = bpftrace_json.read(GOLDEN / "vfs_metadata.json")
    assert out.attached == 11
    recs = vfs_metadata.records(out, _probes_golden_context())
    assert len(recs) == 135 and {(r.tid, r.comm) for r in recs} == {(243, "agent-0")}   # 45 steps x 3
    f = ("op", "start_ns", "end_ns", "failed", "walks", "fast", "slow", "unlazy", "unlazy_failed", "dalloc", "phase")
    # warm-up step 0 (signal 7452210183, phases end 7452578862): outside the measured steps
    assert [tuple(getattr(r, k) for k in f) for r in recs[:3]] == [
        ("stat", 7452500760, 7452518853, False, 1, 10, 0, 1, 0, 0, "outside"),
        ("open", 7452525049, 7452543830, False, 1, 10, 0, 1, 0, 0, "outside"),
        ("stat", 7452553068, 7452574638, True, 1, 10, 1, 1, 0, 1, "outside")]   # ENOENT: ->lookup, new dentry
    # step 5, the first measured one (wake 7478486426, phases end 7478633701)
    assert recs[15].start_ns == 7478557631 and [r.phase for r in recs[15:18]] == ["phases"] * 3
    assert Counter(r.phase for r in recs) == {"outside": 15, "phases": 120}
    # every lookup one RCU walk (no ref-walk retry, unlazy never failed); only the missing name misses
    assert Counter((r.op, r.failed, r.walks, r.fast, r.slow, r.unlazy, r.unlazy_failed, r.dalloc) for r in recs) == {
        ("stat", False, 1, 10, 0, 1, 0, 0): 45, ("open", False, 1, 10, 0, 1, 0, 0): 45,
        ("stat", True, 1, 10, 1, 1, 0, 1): 45}
    assert [r.slowpath for r in recs[:3]] == [False, False, True]
    s = vfs_metadata.summary(recs)
    assert (s["ops"], s["failed"], s["dentries_allocated"], s["unlazy_failed"], s["in_loop_phases"]) == (
        135, 45, 45, 0, 120)
    assert s["ref_walk_fraction"] == 0 and s["dcache_miss_fraction"] == pytest.approx(1 / 3)
    assert s["by_op"]["stat"]["fs_lookup_fraction"] == 0.5 and s["by_op"]["open"]["fs_lookup_fraction"] == 0
    # 90 fast-path ops: 45 stats of 18093 ns, 45 opens of 18781 (43) or 18782 ns: the median straddles them
    assert s["fastpath_cost_p50_us"] == pytest.approx((18.093 + 18.781) / 2)
    assert s["by_op"]["stat"]["fastpath_cost_p50_us"] == pytest.approx(18.093)
    assert s["by_op"]["open"]["cost_p50_us"] == pytest.approx(18.781)
    assert s["slowpath_cost_p50_us"] == pytest.approx(21.505)          # 31 of the 45 misses
    csv = vfs_metadata.to_csv(recs).splitlines()
    assert len(csv) == 136 and csv[3] == "stat,243,agent-0,7452553068,7452574638,21570,1,1,10,1,1,0,1,outside"


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


# The whitespace-separated fields (tag included) that each parser splits a line of each tag into,
# read from the parsers (records()): a template whose printf gains, loses or moves a field must fail
# here, not silently shift the parsed values. None: untagged lines (wakeup_latency).
PARSER_FIELDS = {
    "wakeup_latency": {None: 5},                                  # tid cpu waking running idle
    "dvfs_ramp": {"F": 4, "W": 3, "R": 5, "S": 4},
    "workqueue_delay": {"Q": 7, "S": 5, "E": 4, "K": 4, "D": 4},
    "pagecache": {"G": 8, "F": 7, "A": 8, "D": 8},
    "vfs_metadata": {"O": 13},                                    # O stat|open tid comm start end failed + 6 counts
    "agent_window": {"O": 6, "C": 5, "P": 4, "E": 5},
    "wake_path": {"R": 7, "Q": 4, "q": 4, "S": 3, "E": 3, "W": 4, "T": 3},
    "idle_guard": {},                                             # maps only, printed at exit
}
# Tags whose parser tolerates a different field count, so an extra or missing field is caught only
# by PARSER_FIELDS: workqueue_delay's Q takes 6 or more fields (the workqueue name, p[6], optional).
LENIENT = {("workqueue_delay", "Q")}

_PRINTF = re.compile(r'printf\(\s*"((?:[^"\\]|\\.)*)"')
_CONV = re.compile(r"%[-+ 0#]*\d*(?:hh|h|ll|l|z)?([diuxXs])")


def _printf_formats(text: str) -> list[str]:
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return [m.group(1).replace("\\n", "\n").replace('\\"', '"') for m in _PRINTF.finditer(code)]


def _synthetic(fmt: str, first: int) -> str:
    """The line bpftrace would print for `fmt`: integers for the numeric conversions (increasing, so
    time-ordering parsers keep the order), a comm-like token for %s."""
    n = iter(range(first, first + 100))
    line = _CONV.sub(lambda m: "agent-0" if m.group(1) == "s" else str(next(n)), fmt)
    assert "%" not in line, f"unhandled conversion in {fmt!r}"
    return line.strip()


@pytest.mark.parametrize("name,output", _probe_cases())
def test_template_printf_fields_match_the_parser(name, output):
    from harness.probes import PROBES

    tool = PROBES[name]
    fields = PARSER_FIELDS[name]
    formats = _printf_formats(render(name, output=output))
    if output == "events" and fields:
        assert formats, f"{name}: no printf in the events output"
    if not fields:       # a tool whose records are all in maps: it prints nothing, and takes no line
        assert not formats, f"{name}: prints {formats!r}, which its parser does not read"
        with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
            tool.records(bpftrace_json.BpftraceOutput(printf=["1 2 3"]))
    lines = []
    for i, fmt in enumerate(formats):
        assert fmt.endswith("\n") and fmt.count("\n") == 1, f"{name}: {fmt!r} is not one line"
        line = _synthetic(fmt, 1000 * (i + 1))
        p = line.split()
        tag = None if _CONV.fullmatch(fmt.split()[0]) else p[0]
        assert tag in fields, f"{name} ({output}): the parser has no case for lines tagged {tag!r}: {fmt!r}"
        assert len(p) == fields[tag], (
            f"{name} ({output}): {fmt!r} prints {len(p)} fields, the parser takes {fields[tag]}")
        tool.records(bpftrace_json.BpftraceOutput(printf=[line]))          # accepted alone
        if (name, tag) not in LENIENT:                                       # and only with that many fields
            for bad in (line + " 7", line.rsplit(" ", 1)[0]):
                with pytest.raises(bpftrace_json.ProbeOutputError, match="unexpected line"):
                    tool.records(bpftrace_json.BpftraceOutput(printf=[bad]))
        lines.append(line)
    tool.records(bpftrace_json.BpftraceOutput(printf=lines))                 # and all together, in order
    if output == "events":   # every tag the parser reads is printed by the template
        assert {None if _CONV.fullmatch(f.split()[0]) else f.split()[0] for f in formats} == set(fields), name
