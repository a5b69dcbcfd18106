"""The abuser next to the agent (issue 14): the program on this host, the guest script's lines, and
the reading back of what it left in the share. The booted runs are experiments/abuse.yaml."""

import json
import shlex
import signal
import subprocess
import time

import pytest

from harness import paths
from harness.guest import neighbour, protocol
from harness.guest.protocol import AbuserFiles
from harness.spec.model import AbuserSpec, WorkloadSpec

SNAPSHOT = ("uptime:{t}\n/sys/devices/system/cpu/sim_power/energy_uj:{e}\n"
            "/sys/devices/system/cpu/sim_power/busy_time_in_state:800000 {b}\n"
            "/sys/devices/system/cpu/sim_power/busy_time_in_state:3200000 {b2}\n"
            "/sys/devices/system/cpu/sim_power/cpu1/busy_time_in_state:3200000 {b2}\n")


@pytest.fixture(scope="module")
def abuser(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "abuser"
    src = paths.REPO_ROOT / "harness" / "workload" / "abuser.c"
    subprocess.run(["gcc", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src)], check=True)
    return out


def test_abuser_runs_until_told_and_reports_its_work(abuser, tmp_path):
    """Unmarked, it works until SIGTERM and writes what it did; marked on a kernel without the
    option, the refusal's errno is in its report (a policy's EPERM is told apart from that)."""
    out = tmp_path / "a.json"
    proc = subprocess.Popen([str(abuser), "--kind", "storm", "--threads", "3", "--sleep-us", "500",
                             "--compute-us", "50", "--no-mark", "--out", str(out)])
    time.sleep(0.5)
    assert proc.poll() is None          # runs until told
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    rep = json.loads(out.read_text())
    assert rep["kind"] == "storm" and rep["threads"] == 3 and rep["mark"] is False
    assert rep["work"] > 0 and 0.3 < rep["seconds"] < 10 and rep["mark_errno"] == 0
    subprocess.run([str(abuser), "--kind", "open-loop", "--seconds", "1", "--out", str(out)], check=True)
    rep = json.loads(out.read_text())
    assert rep["marked"] == 0 and rep["mark_errno"] != 0 and rep["work"] > 0   # this host has no option


def test_abuser_pinned_runs_on_its_cpu_only(abuser, tmp_path):
    """--cpu pins every thread: whether the abuser shares the agent's CPU is chosen, not placed."""
    out = tmp_path / "a.json"
    proc = subprocess.Popen([str(abuser), "--kind", "storm", "--threads", "2", "--cpu", "0", "--no-mark",
                             "--out", str(out)])
    time.sleep(0.3)
    allowed = {int(ln.split(":")[1]) for ln in
               subprocess.run(["taskset", "-a", "-p", "-c", str(proc.pid)], capture_output=True, text=True,
                              check=True).stdout.splitlines()[1:]}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert allowed == {0}                               # both worker threads (the main one is not pinned)
    assert json.loads(out.read_text())["cpu"] == 0


@pytest.mark.parametrize("args", [["--kind", "nope", "--out", "x"], ["--kind", "storm"],
                                  ["--kind", "guards", "--out", "x", "--threads", "0"],
                                  ["--kind", "guards", "--out", "x", "--cpu", "0"],
                                  ["--kind", "storm", "--out", "x", "--cpu", "-1"]])
def test_abuser_refuses_bad_arguments(abuser, args):
    assert subprocess.run([str(abuser), *args], capture_output=True).returncode == 2


def test_setup_lines_quote_everything_and_drop_to_nobody():
    a = AbuserSpec(kind="storm", threads=8, budget="10000 20000", policy=2)
    lines = neighbour.setup(a)
    assert "echo 2 > /proc/sys/kernel/sched_agent_latency" in lines
    assert "echo '10000 20000' > /sys/fs/cgroup/harness/abuser/cpu.agent.budget" in lines
    start = next(ln for ln in lines if "setpriv" in ln)
    inner = shlex.split(start.split("sh -c ", 1)[1])[0]     # what the abuser's shell runs
    assert inner.startswith("echo $$ > /sys/fs/cgroup/harness/abuser/cgroup.procs && exec setpriv ")
    argv = shlex.split(inner.split("exec ", 1)[1])
    assert argv[:4] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert argv[4:] == [protocol.ABUSER, "--kind", "storm", "--out", neighbour.RESULT_TMP, "--threads", "8",
                        "--sleep-us", "1000", "--compute-us", "100"]
    pinned = neighbour.abuser_args(AbuserSpec(kind="open-loop", cpu=1))
    assert pinned[-2:] == ["--cpu", "1"]
    root = neighbour.setup(AbuserSpec(kind="guards", user="root", mark=False))
    assert not any("setpriv" in ln for ln in root) and any("--no-mark" in ln for ln in root)


def test_a_budget_that_is_not_one_is_refused_before_any_shell():
    for bad in ("1; reboot", "max", "10 20 30", "-1 5", "$(id) 1"):
        with pytest.raises(ValueError, match="RATE BURST"):
            AbuserSpec(kind="open-loop", budget=bad)


def test_the_script_starts_it_before_the_loop_and_stops_it_after():
    w = WorkloadSpec(abuser=AbuserSpec(kind="open-loop"))
    script = protocol.render(w, 1, setup=neighbour.setup(w.abuser), teardown=neighbour.teardown())
    start, loop, stop = (script.index(s) for s in ("exec setpriv", f"{protocol.AGENTLOOP} --steps",
                                                   f"kill -TERM $(cat {neighbour.PID_FILE})"))
    assert start < loop < stop
    # its charge and the platform are read once it has stopped: its last guards are charged at
    # the wakeups that end them, and the platform counted their idle time already
    assert stop < script.index(f"/mnt/{AbuserFiles.AFTER}") < script.index(f"/mnt/{AbuserFiles.STAT}")
    assert "abuser" not in protocol.render(WorkloadSpec(), 1)


def test_whole_life_probes_cover_the_abuser_from_start_to_charge():
    """probe_run whole-life: attached after the platform setup, before the abuser starts; stopped
    after its charge is read. The other modes attach after it starts (in-repeats) or later."""
    w = WorkloadSpec(abuser=AbuserSpec(kind="guards"))
    kw = dict(setup=["echo platform"], neighbour_setup=neighbour.setup(w.abuser), teardown=neighbour.teardown(),
              probes=["idle_guard"])
    script = protocol.render(w, 2, probe_run="whole-life", **kw)
    at = script.index
    assert at("echo platform") < at("bpftrace -f json") < at("exec setpriv") < at(f"{protocol.AGENTLOOP} --steps")
    assert at(f"/mnt/{AbuserFiles.STAT}") < script.rindex("stop_probes\n")
    assert "steps-probed" not in script
    # setup failures keep their numbering across the two parts: the abuser's first line is 2nd
    first = neighbour.setup(w.abuser)[0]
    assert f'{first} || {{ echo "{protocol.Key.SETUP_FAILED}=2" >> "$S"' in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    riding = protocol.render(w, 2, probe_run="in-repeats", **kw)
    assert riding.index("exec setpriv") < riding.index("bpftrace -f json")
    assert riding.rindex("stop_probes\n") < riding.index(f"/mnt/{AbuserFiles.STAT}")


def _share(tmp_path, result, stat="windows 5\nboosted_usec 1200\nguarded_usec 300\nthrottled 7\n10000 20000\n"):
    d = tmp_path / "share"
    d.mkdir(parents=True)
    (d / AbuserFiles.RESULT).write_text(result)
    (d / AbuserFiles.STAT).write_text(stat)
    (d / AbuserFiles.AGENT_STAT).write_text("windows 900\nboosted_usec 4000\nguarded_usec 0\nthrottled 0\n")
    (d / AbuserFiles.BEFORE).write_text(SNAPSHOT.format(t=10.0, e=1000, b=5000, b2=0))
    (d / AbuserFiles.AFTER).write_text(SNAPSHOT.format(t=14.5, e=91000, b=6000, b2=2_500_000))
    return d


def test_abuser_cpu_is_checked_against_kind_and_machine():
    with pytest.raises(ValueError, match="guards pin"):
        AbuserSpec(kind="guards", cpu=0)
    from harness.spec.model import CellSpec
    with pytest.raises(ValueError, match="workload.abuser.cpu 2 is not a CPU of a 2-CPU machine"):
        CellSpec.model_validate({"arch": "x86_64", "machine": {"cpus": 2},
                                 "workload": {"abuser": {"kind": "storm", "cpu": 2}}})


def test_read_back(tmp_path):
    own = {"kind": "open-loop", "threads": 1, "mark": True, "marked": 1, "mark_errno": 0, "seconds": 4.2,
           "work": 840000, "cpu": -1}
    r = neighbour.read(_share(tmp_path, json.dumps(own)))
    assert r.cpu is None                                # -1: not pinned
    assert r.stat == {"windows": 5, "boosted_usec": 1200, "guarded_usec": 300, "throttled": 7}
    assert r.budget == "10000 20000" and r.agent_stat["windows"] == 900
    assert r.work_per_s == pytest.approx(200000) and r.elapsed_s == pytest.approx(4.5)
    assert r.energy_uj == 90000
    assert r.busy_freq_time_s == {"800000": pytest.approx(0.001), "3200000": pytest.approx(2.5)}
    assert r.cpu_busy_freq_time_s == {}                 # not pinned
    own["cpu"] = 1
    spec = AbuserSpec(kind="open-loop", cpu=1)
    pinned = neighbour.read(_share(tmp_path / "pinned", json.dumps(own)), spec)
    assert pinned.cpu == 1 and pinned.cpu_busy_freq_time_s == {"3200000": pytest.approx(2.5)}


@pytest.mark.parametrize("cpu, spec_cpu", [("1", 1), (True, 1), (0, 1), (1, None), (-7, None), (10**30, 1)])
def test_read_back_takes_the_cpu_from_the_spec_not_the_guest(tmp_path, cpu, spec_cpu):
    """The guest's word picks no CPU's table: a string, a bool, another CPU or a pin the spec did not
    ask for are refused."""
    own = {"kind": "open-loop", "threads": 1, "mark": True, "marked": 1, "mark_errno": 0, "seconds": 4.2,
           "work": 840000, "cpu": cpu}
    with pytest.raises(ValueError, match="cpu"):
        neighbour.read(_share(tmp_path, json.dumps(own)), AbuserSpec(kind="open-loop", cpu=spec_cpu))


@pytest.mark.parametrize("before, after, why", [
    ("800000 5000\n800000 1", "800000 6000", "listed twice"),
    ("800000 5000", "800000 -6000", "unexpected value"),
    ("800000 5000", "800000 4000", "went down"),
    ("800000 5000\n400000 7", "800000 6000", "listed before the run"),
    ("800000 5000", "800000 99999999999999999999", "busy in"),
])
def test_read_back_refuses_busy_times_the_kernel_cannot_have_written(tmp_path, before, after, why):
    own = {"kind": "open-loop", "threads": 1, "mark": True, "marked": 1, "mark_errno": 0, "seconds": 4.2,
           "work": 840000, "cpu": -1}
    d = _share(tmp_path, json.dumps(own))
    key = "/sys/devices/system/cpu/sim_power/busy_time_in_state:"
    for f, table in ((AbuserFiles.BEFORE, before), (AbuserFiles.AFTER, after)):
        lines = "".join(f"{key}{ln}\n" for ln in table.split("\n"))
        (d / f).write_text(f"uptime:{10.0 if f == AbuserFiles.BEFORE else 14.5}\n{lines}")
    with pytest.raises(ValueError, match=why):
        neighbour.read(d)


@pytest.mark.parametrize("result", ["not json", "[1, 2]", json.dumps({"kind": "rm -rf", "mark": True}),
                                    json.dumps({"kind": "storm", "mark": True, "marked": "many"})])
def test_read_back_refuses_what_the_abuser_does_not_write(tmp_path, result):
    with pytest.raises(ValueError):
        neighbour.read(_share(tmp_path, result))


def test_read_back_without_a_result_names_its_stderr(tmp_path):
    d = _share(tmp_path, "{}")
    (d / AbuserFiles.RESULT).unlink()
    (d / AbuserFiles.STDERR).write_text("setpriv: not found\n")
    with pytest.raises(ValueError, match="setpriv: not found"):
        neighbour.read(d)
