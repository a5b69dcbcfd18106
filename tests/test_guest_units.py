"""Guest-side logic that needs no VM: the vng command line, outcome classification, the
guest script, the agent loop's CSV parsing and statistics."""

import csv
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.steps import StepsFormatError, cell_stats, parse_steps_csv, steps_from_columns
from harness.errors import InputError
from harness.guest import protocol, vm
from harness.guest.vm import GuestConfig, GuestResult, classify, vng_command
from harness.probes import bpftrace_json
from harness.spec.model import WorkloadSpec
from harness.workload.command import workload_args


def load_steps(paths):
    return steps_from_columns([parse_steps_csv(p.read_text(), p.name, i) for i, p in enumerate(paths)])


def test_vng_command_tcg_virtual_time_arm64():
    cfg = GuestConfig(arch="arm64", image=Path("/k/Image"), cpus=2, memory="1G", accel="tcg", timing="virtual",
                      icount_shift=1, arm64_cpu="max", cmdline=("nohlt", "foo=1"), root=Path("/rootfs"),
                      tools_dir=Path("/tools"))
    cmd = vng_command(cfg, Path("/res"), "sh /mnt/guest.sh")
    assert cmd[:3] == ["vng", "--run", "/k/Image"]
    assert "--disable-kvm" in cmd
    assert ["--arch", "arm64"] == cmd[cmd.index("--arch"):cmd.index("--arch") + 2]
    assert "--rwdir=/mnt=/res" in cmd and "--rodir=/opt=/tools" in cmd
    assert "--qemu-opts=-icount shift=1,sleep=on -cpu max" in cmd
    assert "--append=nohlt foo=1" in cmd
    assert cmd[-2:] == ["--exec", "sh /mnt/guest.sh"]


def test_vng_command_kvm_real_time_x86():
    cmd = vng_command(GuestConfig(arch="x86_64", image=Path("/k/bzImage"), accel="kvm", timing="realtime"),
                      Path("/res"), "true")
    assert "--disable-kvm" not in cmd and not any(c.startswith("--qemu-opts") for c in cmd)
    assert "--root" not in cmd


def test_host_warnings_before_the_kernel_banner_are_no_splat():
    console = ("WARNING: Image format was not specified for '/c/scratch.img' and probing guessed raw.\n"
               "Linux version 6.12.117+ (harness@agent-latency)\n[ 1.0] booted\n")
    assert classify(0, False, console, {"workload_start": "2.0", "workload_exit": "0"})[0] == "ok"
    assert classify(0, False, console + "[ 9.1] WARNING: CPU: 0 PID: 1 at kernel/sched/core.c:1 x\n",
                    {"workload_start": "2.0", "workload_exit": "0"})[0] == "splat"


@pytest.mark.parametrize("rc,timed_out,console,status,outcome,words", [
    (0, False, "", {"workload_start": "5.1", "workload_exit": "0"}, "ok", "completed"),
    (1, False, "", {"workload_start": "5.1", "workload_exit": "127", "workload_cmd": "/opt/agentloop"},
     "workload-failed", "binary not found"),
    (1, False, "", {"workload_start": "5.1", "workload_exit": "139"}, "workload-failed", "exited with 139"),
    (None, True, "[ 3.1] Kernel panic - not syncing: Requested init /bad failed (error -2).\n", {},
     "panic", "before the workload started: Kernel panic - not syncing: Requested init /bad"),
    (None, True, "booting...\n", {"workload_start": "5.0"}, "hang", "timed out during the workload"),
    (None, True, "booting...\n", {}, "hang", "timed out before the workload started"),
    (255, False, "int3: 0000 [#1] SMP\n", {}, "boot-failed", "int3: 0000"),
    (None, True, "", {"workload_start": "5.0", "workload_end": "42.7"}, "hang", "after the loop ended"),
    (255, False, "", {"workload_start": "5.0", "workload_end": "42.7"}, "hang", "after the loop ended"),
    (0, False, "[ 9.2] WARNING: possible circular locking dependency detected\n[ 9.3] BUG: KASAN: x\n",
     {"workload_start": "5.1", "workload_exit": "0"}, "splat", "(2x): WARNING: possible circular locking"),
])
def test_classify(rc, timed_out, console, status, outcome, words):
    got, reason = classify(rc, timed_out, console, status)
    assert got == outcome
    assert words in reason


def result(outcome, reason="", started=False):
    return GuestResult(outcome, reason, Path("/c"), 1.0, started=started)


def stand_in_guest(tmp_path, monkeypatch, boot_s, boot_timeout_s):
    """run_guest with a stand-in for vng that "boots" for boot_s (None: never starts), says the
    workload started, then hangs; the run timeout is 1 s. Returns (result, wall seconds)."""
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    boot = (f"sleep {boot_s}; echo workload_start=1.0 >> {share_dir / protocol.STATUS}; "
            if boot_s is not None else "")
    monkeypatch.setattr(vm, "vng_command", lambda cfg, share, script: ["sh", "-c", boot + "sleep 60"])
    t0 = time.monotonic()
    res = vm.run_guest(GuestConfig("x86_64", Path("/k")), share_dir, "true", timeout_s=1.0,
                       console_path=tmp_path / "console.log", boot_timeout_s=boot_timeout_s)
    return res, time.monotonic() - t0


@pytest.mark.parametrize("boot_s,outcome_words", [
    (2.0, "timed out during the workload"),        # a boot slower than the run's timeout still runs
    (None, "timed out before the workload started"),
])
def test_the_run_timeout_counts_from_the_workload_start(tmp_path, monkeypatch, boot_s, outcome_words):
    res, wall = stand_in_guest(tmp_path, monkeypatch, boot_s, boot_timeout_s=5.0)
    assert res.outcome == "hang" and outcome_words in res.reason
    if boot_s is None:
        assert 5.0 <= wall < 8.0                   # the boot timeout, not the run's
    else:                                          # the run's second, after the start, not the boot's five
        assert res.boot_wall_s >= boot_s and boot_s + 1.0 <= wall < 4.9


def test_without_a_boot_timeout_the_run_timeout_bounds_the_boot(tmp_path, monkeypatch):
    res, wall = stand_in_guest(tmp_path, monkeypatch, None, boot_timeout_s=None)
    assert res.outcome == "hang" and "before the workload started" in res.reason
    assert 1.0 <= wall < 3.0


def test_only_infrastructure_failures_are_retried():
    assert result("boot-failed").infrastructure
    assert result("hang").infrastructure
    assert result("panic", "kernel panic before the workload started: ... Fatal exception").infrastructure
    assert not result("panic", "kernel panic before ...: Requested init /bad failed").infrastructure
    assert not result("hang", started=True).infrastructure
    assert not result("workload-failed", started=True).infrastructure


def test_guest_script_runs_each_repeat_with_its_own_seed_and_status():
    w = WorkloadSpec(steps=50, warmup=5, seed=7, inject_delay_us=300)
    text = protocol.render(w, repeats=2, setup=["echo hi"])
    assert "--seed 7 --out /mnt/steps-r0.csv" in text and "--seed 8 --out /mnt/steps-r1.csv" in text
    assert text.count("--inject-delay-us 300") == 3   # the two runs and workload_cmd
    assert 'echo "workload_exit=$rc" >> "$S"' in text
    assert text.index("echo hi") < text.index("workload_start")
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)   # valid shell


def test_each_run_meters_its_own_steps_and_the_snapshots_grep_the_same_counters():
    w = WorkloadSpec(steps=50, warmup=5)
    text = protocol.render(w, repeats=2, real=True)
    for r in (0, 1):
        assert f"--meter-out {protocol.GUEST_RESULTS}/{protocol.repeat_files(r).meter}" in text
    for g in protocol.meter_globs(real=True):
        assert f"--meter '{g}'" in text        # quoted: the loop expands it, not the shell
        assert f" {g} " in text.split("snapshot() {")[1].split("}")[0]   # and the shell's snapshot greps it
    assert "powercap" not in protocol.render(w, repeats=1)


def _boottime_minus_monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _meter_edges(prefix: Path) -> tuple[list[str], list[str], int, int]:
    """The loop's two meter files, and their clocks as CLOCK_MONOTONIC ns (the steps' clock)."""
    before, after = ((prefix.parent / f"{prefix.name}-{e}.txt").read_text().splitlines() for e in ("before", "after"))
    off = _boottime_minus_monotonic_ns()
    t0, t1 = (round(float(x[0].split(":", 1)[1]) * 1e9) - off for x in (before, after))
    return before, after, t0, t1


def test_the_loop_meters_exactly_its_measured_steps(agentloop, tmp_path):
    """--meter: the counters are read as the first measured step begins (after the last warm-up step
    ended) and as the last one ends, in grep -H .'s format, re-read fresh from the same descriptor,
    whole however long; what grep . would not print (directories, empty lines) is left out."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "table").write_text("800 5\n\n1200 7\n")
    (d / "link").symlink_to("table")
    (d / "long").write_text("".join(f"{i} {i * 7}\n" for i in range(900)))    # 9 kB: more than a page
    out = tmp_path / "s.csv"
    subprocess.run([str(agentloop), "--steps", "20", "--warmup", "5", "--wait-us", "3000", "--compute-units", "1000",
                    "--out", str(out), "--meter", "/proc/uptime", "--meter", f"{d}/*", "--meter", f"{tmp_path}/none*",
                    "--meter-out", str(tmp_path / "m")], check=True, capture_output=True, timeout=60)
    before, after, t0, t1 = _meter_edges(tmp_path / "m")
    table = [f"{d}/table:800 5", f"{d}/table:1200 7"]
    for lines in (before, after):
        assert lines[0].startswith("uptime:") and lines[1].startswith("/proc/uptime:")
        assert lines[2:4] == [ln.replace("/table:", "/link:") for ln in table]     # a link read as grep reads it
        assert lines[4:904] == [f"{d}/long:{i} {i * 7}" for i in range(900)] and lines[904:] == table
    assert float(after[1].split(":")[1].split()[0]) > float(before[1].split(":")[1].split()[0])
    cols = parse_steps_csv(out.read_text(), out.name, warmup=True)
    assert cols["done_ns"][4] <= t0 < cols["signal_ns"][5]       # between the warm-up and the first step
    assert cols["done_ns"][-1] <= t1 < cols["done_ns"][-1] + 50_000_000


def test_the_meters_read_delays_no_measured_step(agentloop, tmp_path):
    """Thousands of counter files take a while to read: the read comes before the world's first
    measured wait starts, so the first measured step's wakeup is as prompt as the others'."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(3000):
        (d / f"c{i}").write_text(f"{i}\n")
    out = tmp_path / "s.csv"
    subprocess.run([str(agentloop), "--steps", "30", "--warmup", "5", "--wait-us", "200", "--compute-units", "1000",
                    "--out", str(out), "--meter", f"{d}/*", "--meter-out", str(tmp_path / "m")],
                   check=True, capture_output=True, timeout=60)
    _, _, t0, _ = _meter_edges(tmp_path / "m")
    cols = parse_steps_csv(out.read_text(), out.name, warmup=True)
    read_ns = t0 - cols["done_ns"][4]
    wake = cols["wake_ns"] - cols["signal_ns"]
    assert read_ns > 1_000_000, read_ns                      # the read took a millisecond or more
    assert wake[5] < read_ns / 2, (wake[5], read_ns)          # and the first measured wakeup did not wait for it


@pytest.mark.parametrize("mode", [
    ["--agents", "6", "--dist", "exponential", "--wait-us", "300"],
    ["--agents", "4", "--fanout", "--wait-us", "300"],
    ["--agents", "4", "--wait", "nanosleep", "--wait-us", "300"],
    ["--agents", "3", "--wait", "timerfd", "--period-us", "2000"],
    ["--agents", "5", "--warmup", "0", "--wait-us", "100"],
], ids=["exponential", "fanout", "nanosleep", "periodic", "no-warmup"])
def test_with_many_agents_the_meter_spans_every_measured_step(agentloop, tmp_path, mode):
    out = tmp_path / "s.csv"
    args = ["--steps", "40", "--warmup", "3", "--compute-units", "2000", *mode]
    subprocess.run([str(agentloop), *args, "--out", str(out), "--meter", "/proc/uptime", "--meter-out",
                    str(tmp_path / "m")], check=True, capture_output=True, timeout=60)
    _, _, t0, t1 = _meter_edges(tmp_path / "m")
    cols = parse_steps_csv(out.read_text(), out.name, warmup=True)
    warm, measured = cols["warmup"] == 1, cols["warmup"] == 0
    assert t0 < t1 and t1 >= cols["done_ns"][measured].max()
    if warm.any():                                            # every agent's warm-up ended before the start
        assert t0 >= cols["done_ns"][warm].max()
    if "--period-us" not in mode and warm.any():              # and no measured step was signalled before it
        assert t0 <= cols["signal_ns"][measured].min()


def test_the_loop_refuses_half_a_meter(agentloop):
    refused = subprocess.run([str(agentloop), "--steps", "2", "--meter", "/proc/uptime"], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2 and "--meter and --meter-out go together" in refused.stderr


@pytest.mark.parametrize("kind", ["futex", "eventfd", "pipe", "timerfd", "epoll", "io_uring", "nanosleep"])
def test_agentloop_every_wait_kind_on_the_host(agentloop, tmp_path, kind):
    out = tmp_path / "s.csv"
    subprocess.run([str(agentloop), "--steps", "30", "--warmup", "3", "--wait", kind, "--wait-us", "200",
                    "--compute-units", "1000", "--out", str(out)], check=True, capture_output=True, timeout=60)
    s = load_steps([out])
    assert len(s) == 30
    assert (s.wake_ns >= 0).all() and (s.step_ns >= s.wake_ns).all() and (s.compute_ns > 0).all()
    assert (s.wait_ns == 200_000).all()


def test_agentloop_is_deterministic_and_phases_run(agentloop, tmp_path):
    waits = []
    for i in range(2):
        out = tmp_path / f"s{i}.csv"
        subprocess.run([str(agentloop), "--steps", "40", "--warmup", "0", "--dist", "exponential", "--wait-us",
                        "100", "--seed", "3", "--compute-units", "100", "--touch-pages", "8", "--read-kb", "16",
                        "--drop-cache-every", "5", "--path-depth", "6", "--workdir", str(tmp_path), "--out",
                        str(out)], check=True, capture_output=True, timeout=60)
        waits.append(load_steps([out]).wait_ns)
    assert np.array_equal(waits[0], waits[1]) and len(set(waits[0].tolist())) > 30
    assert (tmp_path / "agentloop-tree-0" / "d0" / "d1" / "d2" / "d3" / "d4" / "d5" / "leaf").exists()


def test_injected_delay_shows_up_in_wake_latency_on_the_host(agentloop, tmp_path):
    p50 = {}
    for inject in (0, 3000):
        out = tmp_path / f"i{inject}.csv"
        subprocess.run([str(agentloop), "--steps", "40", "--warmup", "2", "--wait", "eventfd", "--wait-us", "100",
                        "--compute-units", "100", "--inject-delay-us", str(inject), "--out", str(out)],
                       check=True, capture_output=True, timeout=60)
        p50[inject] = cell_stats(load_steps([out])).wake_p50_us
    assert 2900 <= p50[3000] - p50[0] <= 3600, p50


def test_bad_arguments_exit_2(agentloop):
    for args in (["--wait", "carrier-pigeon"], ["--steps", "-3"], ["--dist", "file"],
                 ["--wait", "nanosleep", "--inject-delay-us", "5"]):
        assert subprocess.run([str(agentloop), *args], capture_output=True).returncode == 2


GOLDEN = """agent,step,warmup,wait_ns,signal_ns,wake_ns,phases_ns,done_ns,cpu
0,0,1,1000,100,200,200,900,0
0,1,0,1000,2000,2050,2060,3060,1
0,2,0,1000,5000,5100,5100,6100,1
"""


def test_steps_parser_golden(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text(GOLDEN)
    s = load_steps([f])
    assert s.step.tolist() == [1, 2]                 # warm-up dropped
    assert s.wake_ns.tolist() == [50, 100]
    assert s.step_ns.tolist() == [1060, 1100]
    assert s.compute_ns.tolist() == [1000, 1000]
    assert s.phases_ns.tolist() == [10, 0]
    assert s.cpu.tolist() == [1, 1]
    st = cell_stats(s)
    assert st.steps == 2 and st.wake_p50_us == pytest.approx(0.075) and st.compute_p50_us == pytest.approx(1.0)


def test_steps_parser_rejects_bad_files(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(StepsFormatError, match="unexpected header"):
        load_steps([f])
    f.write_text(GOLDEN.splitlines()[0] + "\n")
    with pytest.raises(StepsFormatError, match="no steps"):
        load_steps([f])
    f.write_text(GOLDEN.splitlines()[0] + "\n" + GOLDEN.splitlines()[1] + "\n")
    with pytest.raises(StepsFormatError, match="only warm-up rows"):
        load_steps([f])
    f.write_text("secret-host-line" * 100 + "\n")
    with pytest.raises(StepsFormatError) as e:
        load_steps([f])
    assert len(str(e.value)) < 260   # a header the guest wrote is quoted as a short excerpt only
    f.write_text(GOLDEN.splitlines()[0] + "\n1,2,3\n")
    with pytest.raises(StepsFormatError, match="wrong width|integers"):
        load_steps([f])


@pytest.mark.parametrize("path", ["/res/a b", "/res/$(reboot)", "/res/x;y", "/res/a=b", "/res/a,b", "/res/`id`",
                                  "/res/\u00e9"])
def test_vng_refuses_paths_a_shell_would_split_or_run(path):
    cfg = GuestConfig(arch="x86_64", image=Path("/k/bzImage"))
    with pytest.raises(InputError, match="characters virtme-ng would pass to a shell"):
        vng_command(cfg, Path(path), "true")
    with pytest.raises(InputError, match="kernel image"):
        vng_command(GuestConfig(arch="x86_64", image=Path(path)), Path("/res"), "true")
    with pytest.raises(InputError, match="single plain token"):
        vng_command(GuestConfig(arch="x86_64", image=Path("/k"), cmdline=("a'b",)), Path("/res"), "true")


def test_platform_plan_covers_cmdline_script_and_workload():
    from harness.guest.platform import plan
    from harness.spec.model import PlatformSpec

    p = plan(PlatformSpec(idle_poll=True, pm_qos_latency_us=0, uclamp_min=512, governor="performance"), "arm64")
    assert p.cmdline[-1] == "nohlt" and p.cmdline[0].startswith("sim_cpufreq.opps=")
    assert "[ -w /dev/cpu_dma_latency ] && exec 3>/dev/cpu_dma_latency && printf '\\000\\000\\000\\000' >&3" \
        in p.setup
    assert p.workload_args == ["--uclamp-min", "512"]
    assert not p.pending
    assert any(line.endswith("printf '\\024\\000\\000\\000' >&3")
               for line in plan(PlatformSpec(pm_qos_latency_us=20), "x86_64").setup)


def test_cgroup_uclamp_sets_both_levels_moves_the_script_in_and_reads_back():
    """A group's uclamp.min is capped by its parent's (a new group's is 0): both are written, as
    the percentage the kernel prints back, and the script joins the agent's group."""
    from harness.guest import protocol
    from harness.guest.platform import AGENT_CGROUP, HARNESS_CGROUP, plan, uclamp_percent
    from harness.spec.model import PlatformSpec, WorkloadSpec

    # full capacity reads back "max" (cpu_uclamp_print()): written so, the read-back matches
    assert [uclamp_percent(v) for v in (0, 1, 512, 1023, 1024)] == ["0.00", "0.10", "50.00", "99.90", "max"]
    for v in range(1024):       # the kernel's DIV_ROUND_CLOSEST(hundredths * 1024, 10000) gives v back
        assert (int(uclamp_percent(v).replace(".", "")) * 1024 + 5000) // 10000 == v
    p = plan(PlatformSpec(cgroup_uclamp_min=300), "x86_64")
    at = [i for i, line in enumerate(p.setup) if "cpu.uclamp.min" in line or "cgroup.procs" in line]
    assert p.setup[at[0]] == (f"setall cgroup_uclamp_min '{HARNESS_CGROUP}/cpu.uclamp.min "
                              f"{AGENT_CGROUP}/cpu.uclamp.min' 29.30")
    assert p.setup[at[1]] == f"echo $$ > {AGENT_CGROUP}/cgroup.procs" and at[1] > at[0]
    assert p.applied["cgroup_uclamp_min"] == 300 and p.workload_args == []
    script = protocol.render(WorkloadSpec(steps=2, warmup=0), 1, setup=p.setup)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert not any("uclamp" in line for line in plan(PlatformSpec(), "x86_64").setup)


def test_uclamp_flag_reaches_sched_setattr(agentloop, tmp_path):
    proc = subprocess.run([str(agentloop), "--steps", "5", "--warmup", "0", "--wait-us", "10", "--compute-units",
                           "10", "--uclamp-min", "2000", "--out", str(tmp_path / "x.csv")], capture_output=True)
    assert proc.returncode == 2 and b"uclamp-min must be in 0..1024" in proc.stderr


def test_a_custom_slice_keeps_the_agents_policy_and_nice_level(agentloop, tmp_path):
    """Setting the slice sets all fair params: the loop keeps the policy and passes its nice level
    back, so a run started under `chrt -b` and `nice` stays SCHED_BATCH at its nice (a
    sched_setattr without KEEP_POLICY and the nice would make it SCHED_OTHER at 0), and the slice
    holds (se.slice in /proc, where the host kernel shows it)."""
    w = WorkloadSpec(steps=40, warmup=0, compute_units=100, wait={"us": 50000}, slice_us=500)
    args = workload_args(w, 0, str(tmp_path / "n.csv"), "agentloop")
    proc = subprocess.Popen(["chrt", "-b", "0", "nice", "-n", "7", str(agentloop), *args[1:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def agent_task():
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                if task.joinpath("comm").read_text().startswith("agent-"):   # not the main thread
                    return task
            except OSError:
                pass
        return None

    try:
        deadline = time.monotonic() + 20
        while agent_task() is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)   # well into the loop (2 s of 50 ms waits): its setup is done
        task = agent_task()
        stat = task.joinpath("stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        nice, policy = int(fields[16]), int(fields[38])      # stat fields 19 and 41
        sched = task.joinpath("sched").read_text()
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert b"sched_setattr" not in err, err
    want = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)  # nice -n 7 adds to ours
    assert (policy, nice) == (3, want)                      # SCHED_BATCH, our nice + 7
    for line in sched.splitlines():
        if line.startswith("se.slice"):
            assert int(line.split(":")[1]) == 500_000


def test_probes_get_a_run_of_their_own_after_the_untraced_repeats():
    w = WorkloadSpec(steps=10, warmup=1)
    text = protocol.render(w, repeats=2, probes=["wakeup_latency"])
    assert text.index("/mnt/steps-r1.csv") < text.index("bpftrace -f json") < text.index("/mnt/steps-probed.csv")
    assert "--seed 1 --out /mnt/steps-probed.csv" in text     # repeat 0's seed: the same waits
    assert text.index("steps-probed.csv") < text.rindex("stop_probes\n")
    # bpftrace writes to tmpfs; its output reaches the results when it stops
    assert "> /tmp/probe-wakeup_latency.json" in text
    assert "cp /tmp/probe-wakeup_latency.json /mnt/probe-wakeup_latency.json" in text
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert "steps-probed" not in protocol.render(w, repeats=2)
    riding = protocol.render(w, repeats=2, probes=["wakeup_latency"], probe_run="in-repeats")
    assert "steps-probed" not in riding and riding.index("bpftrace -f json") < riding.index("/mnt/steps-r0.csv")


def test_probes_run_off_the_pinned_agents_cpu():
    free = WorkloadSpec(steps=10, warmup=1)
    pinned = WorkloadSpec(steps=10, warmup=1, agent_cpu=1, world_cpu=0)
    assert protocol.probe_cpus(free, 4) is None and protocol.probe_cpus(pinned, 1) is None
    assert protocol.probe_cpus(pinned, 4) == "0,2,3"
    text = protocol.render(pinned, repeats=1, probes=["wakeup_latency"], cpus=2)
    assert (f"taskset -c 0 env {bpftrace_json.ATTACHED_NOTICE}=1 bpftrace -f json /mnt/probes/wakeup_latency.bt"
            in text)
    assert "taskset" not in protocol.render(free, repeats=1, probes=["wakeup_latency"], cpus=2)


def test_file_phases_on_a_scratch_disk(tmp_path):
    w = WorkloadSpec(steps=10, warmup=1, phases={"read_kb": 8, "drop_cache_every": 2, "path_depth": 3,
                                                 "path_misses": True, "disk_mb": 32})
    text = protocol.render(w, repeats=1)
    mount = text.index("mount -t ext4 -o noatime /dev/$dev /tmp/scratch")
    assert mount < text.index("agentloop ")
    assert "--workdir /tmp/scratch" in text and "--path-miss" in text and "--drop-cache-every 2" in text
    assert "find /tmp/scratch/agentloop-* -xdev -printf '%D %i %p\\n' > /mnt/files.txt" in text
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert "--workdir /tmp " in protocol.render(WorkloadSpec(steps=10, warmup=1), repeats=1)
    # stat's st_dev for 254:1 and 8:17, as find -printf %D prints them
    (tmp_path / "files.txt").write_text(f"{(254 << 8) | 1} 12 /tmp/scratch/agentloop-data-0\n"
                                        f"{(8 << 8) | 17} 13 /tmp/x y\nbad line\n")
    assert protocol.read_file_index(tmp_path) == {((254 << 20) | 1, 12): "/tmp/scratch/agentloop-data-0",
                                                      ((8 << 20) | 17, 13): "/tmp/x y"}


@pytest.mark.parametrize("phases,words", [
    ({"read_kb": 8, "drop_cache_every": 2}, "drop_cache_every needs disk_mb"),
    ({"path_misses": True}, "path_misses needs path_depth"),
])
def test_phase_options_that_cannot_work_are_refused(phases, words):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=words):
        WorkloadSpec(phases=phases)


def test_scratch_disk_is_a_formatted_image_removed_afterwards(tmp_path):
    from harness.guest.scratch import scratch_disk

    with scratch_disk(tmp_path, 16) as image:
        assert image.stat().st_size == 16 << 20
        assert b"\x53\xef" == image.read_bytes()[1024 + 0x38:1024 + 0x3A]   # the ext4 superblock magic
    assert not image.exists() and not list(tmp_path.iterdir())


def test_burst_steps_compute_more_on_every_nth_step(agentloop, tmp_path):
    """Every 4th step (warm-up counted) runs 50x the work: the demand changes, as an agent's
    tool calls do, so the governor cannot predict it from the last step."""
    out = tmp_path / "b.csv"
    w = WorkloadSpec(steps=16, warmup=4, compute_units=20000, burst_every=4, burst_units=1000000, wait={"us": 100})
    args = workload_args(w, 0, str(out), "agentloop")
    subprocess.run([str(agentloop), *args[1:]], check=True, capture_output=True, timeout=60)
    rows = list(csv.DictReader(out.open()))
    compute = np.array([int(r["done_ns"]) - int(r["phases_ns"]) for r in rows])
    burst = np.array([int(r["step"]) % 4 == 3 for r in rows])
    assert len(rows) == 20 and burst.sum() == 5
    assert compute[burst].min() > 10 * compute[~burst].max()
    with pytest.raises(ValueError, match="burst_every and burst_units go together"):
        WorkloadSpec(burst_every=4)


def test_hogs_share_the_agents_cpu_and_a_custom_slice_is_set(agentloop, tmp_path):
    """A CPU-bound neighbour pinned with the agent spins on the agent's CPU for the whole run (the
    contended case: it uses the CPU whenever the agent waits). --slice-us sets the agent's EEVDF
    request with sched_setattr (the loop exits non-zero if the kernel refuses it)."""
    cpu = min(os.sched_getaffinity(0))

    def run(hogs):
        out = tmp_path / f"h{hogs}.csv"
        w = WorkloadSpec(steps=200, warmup=2, compute_units=20000, wait={"us": 1000}, agent_cpu=cpu, hogs=hogs,
                         slice_us=500)
        args = workload_args(w, 0, str(out), "agentloop")
        assert args[args.index("--slice-us") + 1] == "500"
        t0 = os.times()
        subprocess.run([str(agentloop), *args[1:]], check=True, capture_output=True, timeout=120)
        t1 = os.times()
        assert len(list(csv.DictReader(out.open()))) == 202
        return t1.children_user - t0.children_user, t1.elapsed - t0.elapsed

    cpu_alone, _ = run(0)
    cpu_shared, wall = run(1)
    # the hog ran whenever the agent did not: far more CPU time than the loop alone (a fifth of the
    # wall time at least, leaving room for a loaded host)
    assert cpu_shared > cpu_alone + 0.2 * wall, (cpu_alone, cpu_shared, wall)
    with pytest.raises(ValueError, match="100..100000"):
        WorkloadSpec(slice_us=50)
    with pytest.raises(ValueError, match="hog_cpu needs hogs"):
        WorkloadSpec(hog_cpu=0)
    proc = subprocess.run([str(agentloop), "--steps", "1", "--slice-us", "50"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--slice-us" in proc.stderr
    proc = subprocess.run([str(agentloop), "--steps", "1", "--adpf-target-us", "500", "--uclamp-min", "10"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--adpf-target-us" in proc.stderr


def test_a_sched_ext_script_starts_the_loader_from_the_share_and_snapshots_its_state():
    from harness.guest import platform
    from harness.spec.model import PlatformSpec
    plan = platform.plan(PlatformSpec(sched_ext="scx_simple"), "x86_64")
    script = protocol.render(WorkloadSpec(), 2, setup=plan.setup, sched_ext=True)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert f"{protocol.GUEST_RESULTS}/{protocol.SCHED_EXT_BIN} > " in script
    assert script.index("startscx scx_simple ||") < script.index(f"{protocol.AGENTLOOP} --steps")
    snapshot = script[script.index("snapshot() {"):script.index("} > \"$1\"")]
    assert "/sys/kernel/sched_ext/state" in snapshot and "/sys/kernel/sched_ext/root/ops" in snapshot
    # without it, the script is what it was (recorded guests replay it byte for byte)
    assert "sched_ext" not in protocol.render(WorkloadSpec(), 2, setup=platform.plan(PlatformSpec(), "x86_64").setup)


@pytest.mark.parametrize("cell, words", [
    ({"platform": {"sched_ext": "scx_simple"}}, "add 'sched-ext' to kernel.fragments"),
    ({"platform": {"sched_ext": "scx_rusty"}}, "scx_simple"),
])
def test_sched_ext_cells_need_their_kernel(cell, words):
    from pydantic import ValidationError

    from harness.spec.model import CellSpec
    with pytest.raises(ValidationError, match=words):
        CellSpec.model_validate(cell)
    ok = CellSpec.model_validate({"platform": {"sched_ext": "scx_qmap"},
                                  "kernel": {"config": {"CONFIG_SCHED_CLASS_EXT": True}}})
    assert ok.platform.sched_ext == "scx_qmap"
    # arm64 too: its loaders are static, so its root filesystem needs no libelf
    arm = CellSpec.model_validate({"arch": "arm64", "platform": {"sched_ext": "scx_simple"},
                                   "kernel": {"fragments": ["base", "sched-ext"]}})
    assert arm.arch == "arm64" and arm.platform.sched_ext == "scx_simple"
