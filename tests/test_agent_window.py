"""The agent latency window in a booted CONFIG_AGENT_LATENCY=y guest: unmarked tasks see a stock
kernel (no window event at all), a marked agent gets a window at every wakeup, frequency boosts at
its wakeups and an idle guard while it waits, and its steps get faster; the series' KUnit suite
passes at boot and its kselftest for the prctl passes in the guest. x86_64 in CI; arm64 opt-in."""

import json
import re
import shutil
import subprocess
import textwrap

import pytest
import yaml

from harness import records
from harness.cli import main
from harness.guest.vm import GuestConfig, run_guest, splats
from harness.runner import Runner
from harness.spec import load_experiment
from harness.workload.build import SELFTEST, selftest_dir, series_file

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
    # through the real CLI, as a user runs an experiment
    code = main(["run", str(f), "--results-dir", str(tmp_path / "results")])
    (run_dir,) = (tmp_path / "results").iterdir()
    cells = {}
    for d in sorted(p for p in run_dir.iterdir() if (p / "result.json").is_file()):
        cell = json.loads((d / "result.json").read_text())
        cell["console"] = (d / records.console_log(0)).read_text(errors="replace")
        cell["dir"] = d
        cells[cell["variant"]] = cell
    assert code == 0 and all(c["status"] == "ok" for c in cells.values()), \
        [(c["cell"], c["status"], c["reason"]) for c in cells.values()]
    assert sorted(cells) == sorted(variants)
    return cells


KUNIT_SUITE = re.compile(r"# agent_latency: pass:(\d+) fail:(\d+) skip:(\d+) total:(\d+)")


def check_window(cells):
    quiet = cells["unmarked"]["probes"]["agent_window"]
    assert quiet["windows_opened"] == 0 and quiet["freq_boosts"] == 0 and quiet["idle_guards"] == 0, quiet
    marked = cells["marked"]["probes"]["agent_window"]
    # one window per wakeup of the agent (110 steps), whichever path woke it (a task that blocked
    # while ineligible is requeued by ttwu_runnable() under DELAY_DEQUEUE). The loop starts only
    # once bpftrace says every probe is attached: a loop started at `attached_probes` lost its
    # first steps' events when attaching was slow (83 of 110 in one CI run). One more can come
    # after the last step: the thread may block once on its way out, and that wakeup opens a window
    # too (arm64: 111, the extra one 27 us after the last step's end, with no step signal before it).
    assert 110 <= marked["windows_opened"] <= 111 and marked["explicit_windows"] == 0, marked
    # the sizing arithmetic's KUnit suite ran at boot
    assert KUNIT_SUITE.search(cells["marked"]["console"]).groups() == ("7", "0", "0", "7")
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
def test_agent_window_x86_64(tmp_path, capsys):
    """CI's booted check of the window, through the CLI with a real bpftrace probe attached, so
    that these boots are also CI's end-to-end smoke (experiments/smoke.yaml on the stock kernel,
    with the wakeup_latency probe, is test_cli_smoke_run, extended: each bpftrace compilation
    costs a minute or more of wall time under TCG)."""
    cells = run_window_check(tmp_path, "x86_64", ("unmarked", "marked"))
    out = capsys.readouterr().out
    assert "x86_64-unmarked" in out and "wake p50" in out, out
    check_window(cells)


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


TAP_RESULT = re.compile(r"^(not ok|ok) \d+ (\S+)(\s+# SKIP)?", re.M)

# the kselftest's cases (the series' own list, so that a case added or lost is noticed)
PRCTL_CASES = {f"global.{n}" for n in ("unmarked", "mark_get_clear", "bounds", "sizes_and_pointers",
                                       "explicit_windows", "fork_does_not_inherit", "exec_clears",
                                       "block_wake")}
ROOT_CASES = {"policy.who_may_mark"} | {f"cg.{n}" for n in (
    "defaults", "write_read", "errors", "window_max_inherited", "budget_inherited", "budget_guards",
    "budget_guard_shared", "budget_rate", "policy_lowered")}


def tap_results(out: str) -> dict[str, str]:
    """kselftest's TAP output -> {case: "pass" | "skip" | "fail"}."""
    return {name: "fail" if verdict == "not ok" else "skip" if skip else "pass"
            for verdict, name, skip in TAP_RESULT.findall(out)}


def test_series_file_follows_every_patch(tmp_path):
    """The kselftest is built from what the whole series leaves, not from the patch that adds it:
    a later patch's change to the file is in it."""
    added = tmp_path / "0001-add.patch"
    added.write_text(textwrap.dedent("""\
        diff --git a/t/x.c b/t/x.c
        new file mode 100644
        --- /dev/null
        +++ b/t/x.c
        @@ -0,0 +1,2 @@
        +int a;
        +int b;
        """))
    changed = tmp_path / "0002-change.patch"
    changed.write_text(textwrap.dedent("""\
        diff --git a/other.c b/other.c
        --- a/other.c
        +++ b/other.c
        @@ -1 +1 @@
        -x
        +y
        diff --git a/t/x.c b/t/x.c
        --- a/t/x.c
        +++ b/t/x.c
        @@ -1,2 +1,2 @@
         int a;
        -int b;
        +int c;
        """))
    assert series_file([added, changed], "t/x.c") == "int a;\nint c;\n"
    assert series_file([changed], "nothing.c") is None
    # and the real series: every case of the final file is in what the guest runs
    from harness.kernel import series
    text = series_file([p.path for p in series.load_series(["agent-latency"])], SELFTEST)
    cases = {f"global.{n}" for n in re.findall(r"^TEST\((\w+)\)", text, re.M)} | \
            {f"{f}.{n}" for f, n in re.findall(r"^TEST_F\((\w+), (\w+)\)", text, re.M)}
    assert cases == PRCTL_CASES | ROOT_CASES


@pytest.mark.kernel   # needs the unpacked kernel source for kselftest's headers
def test_selftest_builds_from_the_patch_once_and_skips_without_the_option():
    """The kselftest comes from the series' patches (cached by content); on this host kernel, which
    has no CONFIG_AGENT_LATENCY, every case skips and the run passes, as kselftest expects."""
    from harness.kernel.cache import BuildCache
    d = selftest_dir(BuildCache(), "x86_64")
    mtime = (d / "agent_latency_test").stat().st_mtime_ns
    assert selftest_dir(BuildCache(), "x86_64") == d and (d / "agent_latency_test").stat().st_mtime_ns == mtime
    proc = subprocess.run([str(d / "agent_latency_test")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert tap_results(proc.stdout) == {c: "skip" for c in PRCTL_CASES | ROOT_CASES}, proc.stdout


def run_selftest(tmp_path, arch):
    f = tmp_path / "agent_window_check.yaml"
    exp = yaml.safe_load(EXPERIMENT.replace("ARCH", arch))
    exp["variants"] = [v for v in exp["variants"] if v["name"] == "unmarked"]
    f.write_text(yaml.safe_dump(exp, sort_keys=False))
    runner = Runner(load_experiment(f), tmp_path / "results")
    plan = runner.plan()
    prep = runner.prepare(plan)[plan[0].cell.id]
    assert prep.kernel is not None, prep.kernel_error
    share = tmp_path / "share"
    share.mkdir()
    shutil.copy(selftest_dir(runner.cache, arch) / "agent_latency_test", share)
    cfg = GuestConfig(arch=arch, image=prep.kernel.image, accel=prep.accel.accel, timing=prep.timing,
                      root=prep.rootfs, tools_dir=prep.tools)
    # as root; as nobody under the default policy (CAP_SYS_NICE only) and under policy 2 (anyone)
    nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ./agent_latency_test"
    script = ("cd /mnt && ./agent_latency_test > out.txt 2>&1; echo $? > rc; "
              f"{nobody} > out-nobody.txt 2>&1; echo $? > rc-nobody; "
              "cat /proc/sys/kernel/sched_agent_latency > policy; "
              "echo 2 > /proc/sys/kernel/sched_agent_latency; "
              f"{nobody} > out-anyone.txt 2>&1; echo $? > rc-anyone; "
              "echo 1 > /proc/sys/kernel/sched_agent_latency")
    res = run_guest(cfg, share, script, 900, tmp_path / "console.log")
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert (share / "rc-anyone").is_file(), (res.outcome, res.reason, console[-3000:])
    return share, console


def check_selftest(share, console):
    """Root passes every case; nobody is refused the mark under the default policy (the marking cases
    skip on EPERM, the one that does not mark passes) and passes them all under policy 2; the
    policy and cgroup cases need root and skip for nobody."""
    assert (share / "policy").read_text().strip() == "1"   # the default
    expected = {
        "": {c: "pass" for c in PRCTL_CASES | ROOT_CASES},
        "-nobody": {c: "pass" if c == "global.unmarked" else "skip" for c in PRCTL_CASES | ROOT_CASES},
        "-anyone": {c: "pass" if c in PRCTL_CASES else "skip" for c in PRCTL_CASES | ROOT_CASES},
    }
    for who, want in expected.items():
        out = (share / f"out{who}.txt").read_text()
        assert (share / f"rc{who}").read_text().strip() == "0", out
        assert tap_results(out) == want, out
    assert not splats(console), splats(console)


@pytest.mark.kernel
def test_prctl_selftest_x86_64(tmp_path):
    check_selftest(*run_selftest(tmp_path, "x86_64"))


@pytest.mark.kernel
@pytest.mark.arm64
def test_prctl_selftest_arm64(tmp_path):
    check_selftest(*run_selftest(tmp_path, "arm64"))
