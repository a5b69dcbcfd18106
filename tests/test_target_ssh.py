"""Remote targets without a network: machine.target and the inventory (spec errors located in
the file, exit 2), and the SSH backend end to end through the runner over a fake fabric
Connection (harness/target/fake.py) whose target replays a real guest's recorded share: upload,
the detached run, polling, fetch within caps, cleanup, real energy, and every failure mode as a
failed cell with its reason while the next cell still runs."""

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from harness import procs, records
from harness.cli import main
from harness.errors import SpecError
from harness.guest import protocol
from harness.guest.vm import GuestConfig
from harness.kernel.cache import BuildCache
from harness.records import CellResult
from harness.runner import Runner
from harness.spec import load_experiment
from harness.spec.model import PlatformSpec
from harness.target import energy, fake, knobs
from harness.target.inventory import Target, TargetEntry, TargetError, parse_url
from harness.target.remote import FabricRemote, known_hosts_files
from harness.target.ssh import SshBackend

FIXTURES = Path(__file__).parent / "fixtures" / "guest"
REC = FIXTURES / "x86_64"


def write_experiment(tmp_path, machine="target: lab1", body="", name="remote"):
    base = (FIXTURES / "recording.yaml").read_text().replace("name: recording", f"name: {name}")
    base = base.replace("arch: [x86_64, arm64]", "arch: [x86_64]")
    timeout = "" if "run_timeout_s" in machine else "run_timeout_s: 600, "
    base = base.replace("machine: {cpus: 2, memory: 1G, accel: auto, timing: auto, run_timeout_s: 600}",
                        f"machine: {{cpus: 2, {timeout}{machine}}}")
    f = tmp_path / f"{name}.yaml"
    f.write_text(base + textwrap.dedent(body))
    return f


def inventory(tmp_path, text=None):
    (tmp_path / "targets.yaml").write_text(text or textwrap.dedent("""\
        targets:
          lab1: {url: "ssh://root@lab1.example:2222", reconnect_s: 1}
          lab2: {url: "ssh://root@lab2.example"}
        fleets:
          lab: [lab1, lab2]
        """))


@pytest.fixture(autouse=True)
def _no_user_inventory(tmp_path, monkeypatch):
    """Never the developer's own ~/.config inventory."""
    monkeypatch.delenv("HARNESS_TARGETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def spec_error(path) -> str:
    with pytest.raises(SpecError) as e:
        load_experiment(path)
    return str(e.value)


# -- machine.target and the inventory ------------------------------------------------------------

@pytest.mark.parametrize("url,host,user,port", [
    ("ssh://root@board.lab:2222", "board.lab", "root", 2222), ("ssh://10.0.0.7", "10.0.0.7", None, None),
    ("ssh://me@[fe80::1]:22", "[fe80::1]", "me", 22), ("ssh://pi@rpi5/", "rpi5", "pi", None)])
def test_ssh_urls_parse(url, host, user, port):
    a = parse_url(url)
    assert (a.host, a.user, a.port) == (host, user, port)


@pytest.mark.parametrize("url,why", [
    ("ssh://root:hunter2@board", "YAML never holds passwords"), ("ssh://root@board:0", "port 0"),
    ("ssh://root@board:99999", "port 99999"), ("ssh://root@board/tmp", "no path"),
    ("ssh://root@bo;ard", "not a host name"), ("ssh://Ro ot@board", "not a plain user name"),
    ("ssh://root@board?x=1", "no path, query")])
def test_bad_ssh_urls_say_why(url, why):
    with pytest.raises(TargetError, match=why):
        parse_url(url)


def test_a_password_in_the_target_is_a_located_spec_error(tmp_path):
    f = write_experiment(tmp_path, machine='target: "ssh://root:secret@lab1.example"')
    msg = spec_error(f)
    assert f"{f}:12:" in msg and "machine.target" in msg and "never holds passwords" in msg
    assert main(["validate", str(f)]) == 2


@pytest.mark.parametrize("machine,where,why", [
    ('target: "http://lab1"', "machine.target", "only ssh:// targets"),
    ("target: lab1, timing: virtual", "machine.timing", "virtual time is QEMU's"),
    ("target: lab1, cmdline: [quiet]", "machine.cmdline", "needs a target with `deploy: kexec`"),
    ("target: nosuch", "machine.target", "no target or fleet 'nosuch'")])
def test_target_problems_are_located(tmp_path, machine, where, why):
    inventory(tmp_path)
    msg = spec_error(write_experiment(tmp_path, machine=machine))
    assert where in msg and why in msg and ":12:" in msg


def test_a_scratch_disk_set_by_a_variant_is_refused_at_the_variant(tmp_path):
    inventory(tmp_path)
    f = write_experiment(tmp_path, body="variants:\n  - {name: d, set: {workload.phases.disk_mb: 64}}\n")
    msg = spec_error(f)
    assert f"{f}:21:" in msg and "workload.phases.disk_mb" in msg and "not on a remote target" in msg


def test_a_name_without_an_inventory_says_where_it_looked(tmp_path):
    msg = spec_error(write_experiment(tmp_path))
    assert "no targets inventory" in msg and "HARNESS_TARGETS" in msg and str(tmp_path / "targets.yaml") in msg


def test_inventory_errors_are_located_in_the_inventory(tmp_path):
    inventory(tmp_path, "targets:\n  lab1: {url: 'ssh://root@lab1', workdir: 'relative/dir'}\n"
                        "fleets:\n  lab: [lab1, ghost]\n")
    msg = spec_error(write_experiment(tmp_path))
    assert f"{tmp_path / 'targets.yaml'}:2:" in msg and "targets.lab1.workdir" in msg and "absolute" in msg
    inventory(tmp_path, "targets:\n  lab1: {url: 'ssh://root@lab1'}\nfleets:\n  lab: [lab1, ghost]\n")
    msg = spec_error(write_experiment(tmp_path))
    assert f"{tmp_path / 'targets.yaml'}:4:" in msg and "fleets.lab[1]" in msg and "no target 'ghost'" in msg


def test_inventory_from_the_environment_and_its_arch_check(tmp_path, monkeypatch):
    inv = tmp_path / "elsewhere.yaml"
    inv.write_text("targets:\n  lab1: {url: 'ssh://root@lab1', arch: arm64}\n")
    monkeypatch.setenv("HARNESS_TARGETS", str(inv))
    msg = spec_error(write_experiment(tmp_path))
    assert "target 'lab1' is arm64" in msg and "the cell is x86_64" in msg
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "missing.yaml"))
    assert "does not exist" in spec_error(write_experiment(tmp_path))


def test_target_cells_resolve_and_need_no_sim_platform(tmp_path):
    inventory(tmp_path)
    f = write_experiment(tmp_path, machine="target: lab")
    text = f.read_text().replace("series: [sim-platform, agent-latency]", "series: []")
    f.write_text(text.replace("fragments: [base, tracing, platform, sim-platform]", "fragments: [base]"))
    (cell,) = load_experiment(f).cells
    assert [t.name for t in cell.targets] == ["lab1", "lab2"]
    assert cell.targets[0].address.port == 2222 and cell.targets[0].entry.workdir == "/var/tmp/agent-latency"


# -- the backend through the runner, on a fake connection -------------------------------------------

def rapl_snapshots(work: Path) -> None:
    """A RAPL package zone in the loop's meter, the counter wrapping in repeat 1; the shell's
    whole-repeat snapshots read it too, 5000 uJ further out on each side (warm-up and start-up)."""
    share = work / "share"
    rng = 262143328850
    for tag, before, after in (("r0", 1000, 51000), ("r1", rng - 28850, 20000)):
        for name, value in ((f"meter-{tag}-before.txt", before), (f"meter-{tag}-after.txt", after),
                            (f"platform-{tag}-before.txt", (before - 5000) % rng),
                            (f"platform-{tag}-after.txt", after + 5000)):
            with open(share / name, "a") as fh:
                fh.write(f"/sys/class/powercap/intel-rapl:0/name:package-0\n"
                         f"/sys/class/powercap/intel-rapl:0/energy_uj:{value}\n"
                         f"/sys/class/powercap/intel-rapl:0/max_energy_range_uj:{rng}\n"
                         f"/sys/class/powercap/intel-rapl:0:0/energy_uj:{value // 2}\n")


def remote_run(tmp_path, target: fake.FakeTarget | None = None, body="", machine="target: lab1", targets=None,
               builder=None):
    """The experiment through the runner on the fake target (`builder`: a kernel builder, for
    cells that deploy one; none is built otherwise)."""
    inventory(tmp_path, targets)
    le = load_experiment(write_experiment(tmp_path, machine=machine, body=body))
    target = target or fake.FakeTarget(tmp_path / "remote", REC)
    target.root.mkdir(parents=True, exist_ok=True)
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "agentloop").write_bytes(b"\x7fELF fake workload")
    r = Runner(le, tmp_path / "results", cache=BuildCache(tmp_path / "cache"), builder=builder or object(), poll_s=0.05,
               target_backend=lambda t: SshBackend(BuildCache(tmp_path / "cache"), t, connect=target.connection,
                                                   poll_s=0.01, tools_dir=tools))
    return r, target, r.run()


def test_a_remote_cell_gives_a_vm_record_labelled_real(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, after_launch=rapl_snapshots)
    r, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok", out.reason
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.guest.platform == "real" and rec.guest.backend == "ssh" and rec.kernel is None
    assert rec.target.name == "lab1" and rec.target.url == "ssh://root@lab1.example:2222"
    assert (rec.target.cpu_model, rec.target.kernel_release) == ("Fake CPU @ 2.0GHz", "6.1.0-fake-amd64")
    assert (rec.target.cpufreq_driver, rec.target.cpuidle_driver) == ("intel_pstate", "intel_idle")
    assert rec.stats.steps == 120 and set(rec.probes) == {"wakeup_latency", "dvfs_ramp"}
    # RAPL: the package zone only (not its sub-zone), the wrap counted once
    assert rec.platform.energy_source == "rapl" and rec.platform.energy_domains == ["intel-rapl:0 (package-0)"]
    assert rec.platform.energy_uj == 50000 + 48850 and rec.platform.meter == "steps"
    assert rec.platform.energy_per_step_by_repeat_uj == [round(50000 / 60, 2), round(48850 / 60, 2)]
    assert rec.platform.frontier is None
    # what went to the target: the rendered script, the probes, the workload; the work dir removed after
    (work,) = {c.split()[2] for c in t.commands if "/launch.sh " in c}
    assert not t.path(work).exists()
    assert any(c.startswith("rm -rf -- ") for c in t.commands)
    assert (out.dir / "guest.sh").read_text() == (out.dir / protocol.SHARE / protocol.GUEST_SCRIPT).read_text()
    assert "cstate_max()" in (out.dir / "guest.sh").read_text()   # the real target's script
    assert "/sys/class/powercap/*/energy_uj" in (out.dir / "guest.sh").read_text()
    log = (out.dir / "console.log").read_text()
    assert "connecting to lab1" in log and "the guest script ran (fake target)" in log


def test_uploads_are_the_hosts_inputs_and_nothing_is_built_from_remote_text(tmp_path):
    seen = {}

    def keep(work):
        seen.update({p.relative_to(work).as_posix(): (p.stat().st_mode & 0o777, p.read_bytes())
                     for p in work.rglob("*") if p.is_file()})
    t = fake.FakeTarget(tmp_path / "remote", REC, after_launch=keep)
    _, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok", out.reason
    assert seen["tools/agentloop"] == (0o755, b"\x7fELF fake workload")
    assert seen["share/guest.sh"][1] == (out.dir / "guest.sh").read_bytes()
    assert {"share/probes/wakeup_latency.bt", "share/probes/dvfs_ramp.bt", "launch.sh", "ns.sh",
            "supervise.sh", "facts.sh"} <= set(seen)
    work = next(c.split()[2] for c in t.commands if "/launch.sh " in c)
    assert all(work in c or c.startswith("mkdir") for c in t.commands), t.commands


@pytest.mark.parametrize("fault,kind,words", [
    (fake.refused, "target-unreachable", "connection refused"),
    (fake.bad_host_key, "host-key", "HOST KEY MISMATCH"),
    (fake.auth_failed, "auth", "never a password"),
    (fake.timed_out, "target-unreachable", "timed out"),
    (fake.no_banner, "target-unreachable", "no SSH server answered")])
def test_connection_faults_fail_the_cell_with_the_reason_and_the_matrix_goes_on(tmp_path, fault, kind, words):
    """Two cells: both on an unreachable target fail with the reason; neither stops the run."""
    t = fake.FakeTarget(tmp_path / "remote", REC, refuse=fault())
    body = "variants:\n  - {name: a}\n  - {name: b}\n"
    r, t, outs = remote_run(tmp_path, t, body=body)
    assert [o.status for o in outs] == ["failed", "failed"]
    for o in outs:
        rec = records.read(o.dir / records.CELL_RESULT, CellResult)
        assert rec.failure == kind and words in rec.reason and "lab1" in rec.reason
        assert words in (o.dir / "console.log").read_text()
    index = records.read(r.run_dir / records.RUN_INDEX, records.RunIndex)
    assert set(index.cells) == {"x86_64-a", "x86_64-b"} and not index.invocations[-1].interrupted


def test_a_connection_lost_mid_run_that_comes_back_loses_nothing(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, lose_after=4)   # launch, the lock check, then a look
    _, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok", out.reason
    assert t.connections == 2 and "lost the connection" in (out.dir / "console.log").read_text()


def test_a_connection_lost_for_good_fails_the_cell_and_keeps_what_was_reported(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, lose_after=4, reconnect=fake.refused(), never_ends=True)
    _, t, (out,) = remote_run(tmp_path, t)
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.failure == "target-lost" and "could not reconnect within 1 s" in rec.reason
    assert "connection refused" in rec.reason and "stay in /var/tmp/agent-latency/c-" in rec.reason
    # the status mirrored before the link dropped is kept, in the share and in the record
    assert protocol.Key.WORKLOAD_START in protocol.read_status(out.dir / protocol.SHARE)
    assert protocol.Key.WORKLOAD_START in rec.guest.status


def test_a_run_that_never_ends_is_stopped_on_the_target(tmp_path):
    """The backend on its own (the spec's shortest timeout is 10 s): the run is a hang, and its
    process group on the target is stopped by the pid the target wrote."""
    t = fake.FakeTarget(tmp_path / "remote", REC, never_ends=True)
    res, _ = _direct_run(tmp_path, t, poll_s=0.05, timeout_s=0.5)
    assert res.outcome == "hang" and res.reason == "guest timed out during the workload" and res.started
    assert any(c.startswith("kill -TERM -- -4242") for c in t.commands), t.commands
    assert "stopped the run's process group 4242" in (tmp_path / "cell" / "console.log").read_text()


def _direct_run(tmp_path, t: fake.FakeTarget, poll_s: float, timeout_s: float = 60):
    """One attempt straight through the backend (no runner): its result and wall time."""
    t.root.mkdir(exist_ok=True)
    (tmp_path / "tools").mkdir(exist_ok=True)
    (tmp_path / "tools" / "agentloop").write_bytes(b"x")
    share = tmp_path / "cell" / protocol.SHARE
    share.mkdir(parents=True, exist_ok=True)
    (share / protocol.GUEST_SCRIPT).write_text("true\n")
    target = Target("lab1", parse_url("ssh://root@lab1"), TargetEntry(url="ssh://root@lab1"))
    b = SshBackend(BuildCache(tmp_path / "cache"), target, connect=t.connection, poll_s=poll_s,
                   tools_dir=tmp_path / "tools")
    t0 = time.monotonic()
    res = b.run(GuestConfig("x86_64", Path("/nonexistent"), tools_dir=tmp_path / "tools"), share, "", timeout_s,
                tmp_path / "cell" / "console.log", 5 if timeout_s < 5 else timeout_s)
    return res, time.monotonic() - t0


def test_the_host_waits_on_the_runs_lock_and_sees_its_end_at_once(tmp_path):
    """A minute between looks at the status, yet a 1 s run is fetched within seconds: the host
    waited on the run's lock, and the target ran nothing else for it meanwhile."""
    t = fake.FakeTarget(tmp_path / "remote", REC, run_s=1.0)
    res, took = _direct_run(tmp_path, t, poll_s=60)
    assert res.ok, res.reason
    assert took < 15, took
    assert t.lock_waits == 1   # one look, one wait: the run ended during it
    log = (tmp_path / "cell" / "console.log").read_text()
    assert "waiting on its lock (flock), a look at its status every 60 s" in log
    (wait,) = [c.split() for c in t.commands if c.startswith("flock ")]
    assert wait[:3] == ["flock", "-s", "-w"] and float(wait[3]) >= 60 and wait[4].endswith("/running")


def test_one_lock_wait_serves_every_look(tmp_path):
    """Looks every 0.5 s over a 3 s run: one flock on the target for the whole run (the looks
    are SFTP reads; the target starts no process for them)."""
    t = fake.FakeTarget(tmp_path / "remote", REC, run_s=3.0)
    res, took = _direct_run(tmp_path, t, poll_s=0.5)
    assert res.ok, res.reason
    assert 3 <= took < 15 and t.lock_waits == 1
    assert sum(1 for c in t.commands if c.startswith("flock ")) == 1


def test_a_lock_freed_without_an_exit_status_is_not_waited_on_again(tmp_path):
    """The supervisor died (no exit file) and its lock went with it: the host polls from then
    on instead of starting a flock a second (a process on the target each time)."""
    t = fake.FakeTarget(tmp_path / "remote", REC, never_ends=True, supervisor_died=True)
    res, took = _direct_run(tmp_path, t, poll_s=0.5, timeout_s=3)
    assert res.outcome == "hang", res.reason
    assert sum(1 for c in t.commands if c.startswith("flock ")) == 1


def test_a_target_without_flock_is_polled(tmp_path):
    facts = {k: v for k, v in fake.FACTS.items() if k != "has_flock"}
    t = fake.FakeTarget(tmp_path / "remote", REC, facts=facts, run_s=1.0)
    res, took = _direct_run(tmp_path, t, poll_s=60)
    assert res.ok, res.reason
    assert took < 15, took                       # polled every UNLOCKED_POLL_S, not every 60 s
    assert t.lock_waits == 0 and not any("flock" in c for c in t.commands)
    assert "no flock on the target: polling it every 2 s" in (tmp_path / "cell" / "console.log").read_text()


def test_a_launcher_that_refuses_fails_the_attempt_at_once(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, launch_exit=3)
    res, took = _direct_run(tmp_path, t, poll_s=60)
    assert res.outcome == "target-failed" and "refused to start the run (exit 3" in res.reason, res.reason
    assert took < 15 and t.lock_waits == 0


def test_the_harness_stopping_ends_the_lock_wait_and_the_run(tmp_path, monkeypatch):
    t = fake.FakeTarget(tmp_path / "remote", REC, never_ends=True)
    stop_at = time.monotonic() + 1.0
    monkeypatch.setattr(procs, "terminating", lambda: signal.SIGTERM if time.monotonic() > stop_at else None)
    t0 = time.monotonic()
    with pytest.raises(procs.Terminated):
        _direct_run(tmp_path, t, poll_s=60, timeout_s=600)
    assert time.monotonic() - t0 < 10
    assert any(c.startswith("kill -TERM -- -4242") for c in t.commands), t.commands


def test_hostile_remote_files_are_not_fetched(tmp_path):
    def plant(work):
        share = work / "share"
        (share / "steps-r0.csv").unlink()
        os.symlink("/etc/shadow", share / "steps-r0.csv")
        os.mkfifo(share / "pipe.txt")
        (share / "bad name;rm").write_text("x")
        with open(share / "workload-r0.err", "wb") as fh:
            fh.truncate(2 << 20)      # over LIMIT_SMALL
    t = fake.FakeTarget(tmp_path / "remote", REC, after_launch=plant)
    _, t, (out,) = remote_run(tmp_path, t)
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.failure == "output-unreadable" and "steps-r0.csv: missing" in rec.reason
    log = (out.dir / "console.log").read_text()
    assert "not fetched: steps-r0.csv (not a regular file)" in log and "not fetched: pipe.txt" in log
    assert "not a plain name" in log and "more than the 1048576-byte limit" in log
    share = out.dir / protocol.SHARE
    assert not (share / "steps-r0.csv").exists() and not (share / "workload-r0.err").exists()
    assert all(p.is_file() and not p.is_symlink() or p.is_dir() for p in share.rglob("*"))


def test_an_oversized_status_or_console_on_the_target(tmp_path):
    def huge_status(work):
        (work / "share" / protocol.STATUS).write_text("x=1\n" * 20000)      # 80 kB > LIMIT_STATUS
    t = fake.FakeTarget(tmp_path / "remote", REC, after_launch=huge_status)
    _, t, (out,) = remote_run(tmp_path, t)
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.failure == "output-unreadable" and "status on the target cannot be read" in rec.reason
    assert "more than the 65536-byte limit" in rec.reason


def test_only_the_end_of_a_long_console_is_kept(tmp_path, monkeypatch):
    from harness.target import ssh
    monkeypatch.setattr(ssh, "CONSOLE_TAIL", 1000)

    def chatty(work):
        (work / "console.log").write_text("early line\n" * 500 + "the last words\n")
    t = fake.FakeTarget(tmp_path / "remote", REC, after_launch=chatty)
    _, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok", out.reason
    log = (out.dir / "console.log").read_text()
    assert log.endswith("the last words\n") and log.count("early line") < 100


def test_a_target_of_another_arch_is_unusable(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC)
    t.facts["arch"] = "aarch64"
    _, t, (out,) = remote_run(tmp_path, t)
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.failure == "target-unusable" and "'aarch64', the cell wants x86_64" in rec.reason


def test_a_non_root_user_runs_the_script_through_sudo(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC)
    t.facts["uid"] = "1000"
    _, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok", out.reason
    assert any(c.startswith("sudo -n sh ") and "/launch.sh" in c for c in t.commands)


def test_a_target_without_sensors_has_no_energy_not_zero(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC)
    t.facts["rapl"] = ""
    _, t, (out,) = remote_run(tmp_path, t)
    rec = records.read(out.dir / records.CELL_RESULT, CellResult)
    assert rec.platform.energy_source == "none" and rec.target.energy_source == "none"
    assert rec.platform.energy_per_step_uj is None and rec.platform.avg_power_mw is None


def test_remote_cells_resume_and_the_fingerprint_names_the_target(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC)
    r, t, (out,) = remote_run(tmp_path, t)
    assert out.status == "ok"
    again = Runner(r.le, tmp_path / "results", cache=BuildCache(tmp_path / "cache"), builder=object(),
                   target_backend=lambda tg: SshBackend(BuildCache(tmp_path / "cache"), tg, connect=t.connection,
                                                        tools_dir=tmp_path / "tools"))
    (o2,) = again.run()
    assert o2.status == "skipped"
    # `plan` says so without a kernel (a target runs its own)
    (preview,), _ = again.preview(lambda req: None, lambda arch: "tools")
    assert preview.action == "resume", preview.why


def test_a_fleet_spreads_cells_one_per_target_at_a_time_into_one_run(tmp_path):
    inventory(tmp_path)
    le = load_experiment(write_experiment(tmp_path, machine="target: lab", body="variants:\n" + "".join(
        f"  - {{name: v{i}}}\n" for i in range(5))))
    targets = {n: fake.FakeTarget(tmp_path / n, REC, run_s=0.3) for n in ("lab1", "lab2")}
    overlap = []
    for name, t in targets.items():
        t.root.mkdir(exist_ok=True)
        other = targets["lab2" if name == "lab1" else "lab1"]
        t.after_launch = lambda work, other=other: overlap.append(other.running)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "agentloop").write_bytes(b"x")
    r = Runner(le, tmp_path / "results", cache=BuildCache(tmp_path / "cache"), builder=object(), poll_s=0.05,
               target_backend=lambda tg: SshBackend(BuildCache(tmp_path / "cache"), tg, poll_s=0.02, tools_dir=tools,
                                                    connect=lambda x: targets[x.name].connection(x)))
    outs = r.run()
    assert [o.status for o in outs] == ["ok"] * 5, [o.reason for o in outs]
    ran_on = {o.cell.id: rec.target.name for o in outs if (rec := records.read(o.dir / records.CELL_RESULT,
                                                                                 CellResult))}
    assert set(ran_on.values()) == {"lab1", "lab2"} and len(ran_on) == 5
    assert all(records.read(o.dir / records.CELL_RESULT, CellResult).target.fleet == "lab" for o in outs)
    assert all(t.most_running == 1 for t in targets.values())          # one cell per target at a time
    assert sum(len([c for c in t.commands if "/launch.sh " in c]) for t in targets.values()) == 5
    assert max(overlap) == 1, overlap                                   # ... and the targets in parallel
    index = records.read(r.run_dir / records.RUN_INDEX, records.RunIndex)
    assert index.complete and len(index.cells) == 5                     # one run directory
    again = Runner(le, tmp_path / "results", cache=BuildCache(tmp_path / "cache"), builder=object(),
                   target_backend=lambda tg: SshBackend(BuildCache(tmp_path / "cache"), tg, tools_dir=tools,
                                                        connect=lambda x: targets[x.name].connection(x)))
    assert [o.status for o in again.run()] == ["skipped"] * 5          # resumes whichever member ran a cell


# -- pieces -----------------------------------------------------------------------------------------

def test_real_knobs_write_only_what_the_experiment_sets():
    default = knobs.plan(PlatformSpec.model_validate({}))
    assert default.setup == [] and default.cmdline == []
    p = knobs.plan(PlatformSpec.model_validate({"governor": "performance", "idle_poll": True,
                                                "pm_qos_latency_us": 0, "idle_governor": "teo"}))
    assert p.setup[0] == "setall governor '/sys/devices/system/cpu/cpufreq/policy*/scaling_governor' performance"
    assert "cstate_poll" in p.setup and any("checkqos 0" in s for s in p.setup) and p.cmdline == []
    assert "setall idle_governor '/sys/devices/system/cpu/cpuidle/current_governor' teo" in p.setup


def test_real_knobs_are_read_back_by_the_script(tmp_path):
    """The real target's setup lines under sh against a fake sysfs: a value that holds passes, one
    that does not (a file that swallows writes) fails with the file and what it read."""
    sysfs = tmp_path / "cpu"
    for pol in ("policy0", "policy1"):
        (sysfs / "cpufreq" / pol).mkdir(parents=True)
        (sysfs / "cpufreq" / pol / "scaling_governor").write_text("powersave\n")
    for cpu in ("cpu0", "cpu1"):
        for i, name in enumerate(("POLL", "C1", "C6")):
            d = sysfs / cpu / "cpuidle" / f"state{i}"
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
            (d / "disable").write_text("0\n")
    w = load_experiment(write_experiment(tmp_path, machine="target: 'ssh://root@x'")).cells[0].spec.workload
    plan = knobs.plan(PlatformSpec.model_validate({"governor": "performance", "idle_poll": True}))
    script = protocol.render(w, 1, setup=plan.setup, real=True).replace("/sys/devices/system/cpu", str(sysfs))
    status = tmp_path / "status"
    script = script.replace(f"S={protocol.GUEST_RESULTS}/{protocol.STATUS}", f"S={status}")
    setup = script.split(f'echo "{protocol.Key.WORKLOAD_CMD}=')[0]
    r = subprocess.run(["sh", "-c", setup], capture_output=True, text=True)
    assert r.returncode == 0, (r.stderr, status.read_text())
    assert (sysfs / "cpufreq/policy1/scaling_governor").read_text().strip() == "performance"
    assert [(sysfs / f"cpu1/cpuidle/state{i}/disable").read_text().strip() for i in range(3)] == ["0", "1", "1"]
    (sysfs / "cpufreq/policy1/scaling_governor").unlink()
    os.symlink("/dev/null", sysfs / "cpufreq/policy1/scaling_governor")
    r = subprocess.run(["sh", "-c", setup], capture_output=True, text=True)
    said = protocol.parse_status(status.read_text())
    assert r.returncode == protocol.EXIT_SETUP
    assert "governor: " in said[protocol.Key.PLATFORM_MISMATCH] and "policy1/scaling_governor reads ''" in \
        said[protocol.Key.PLATFORM_MISMATCH]


def test_energy_sources():
    def snap(**lines):
        return "\n".join(f"{k.replace('__', '/')}:{v}" for k, v in lines.items()) + "\n"
    hw0 = "uptime:10.0\n/sys/class/hwmon/hwmon2/name:ina226\n/sys/class/hwmon/hwmon2/power1_input:2000000\n"
    hw1 = "uptime:12.0\n/sys/class/hwmon/hwmon2/name:ina226\n/sys/class/hwmon/hwmon2/power1_input:4000000\n"
    r = energy.between(energy.parse(hw0), energy.parse(hw1))
    assert r.source == "hwmon-power-sampled" and r.energy_uj == 6_000_000   # 3 W mean x 2 s
    e0 = hw0 + "/sys/class/hwmon/hwmon2/energy1_input:100\n"
    e1 = hw1 + "/sys/class/hwmon/hwmon2/energy1_input:700\n"
    assert energy.between(energy.parse(e0), energy.parse(e1)) == energy.Reading("hwmon", 600, ("hwmon2/energy1_input "
                                                                                                "(ina226)",))
    assert energy.between(energy.parse("uptime:1\n"), energy.parse("uptime:2\n")).source == "none"
    mmio = "/sys/class/powercap/intel-rapl-mmio:0/energy_uj:5\n"
    assert energy.parse(mmio).rapl == {}
    assert energy.between(energy.parse(e0), energy.parse(e1), "rapl").source == "none"


def test_fabric_connection_refuses_unknown_host_keys_and_reads_the_configured_known_hosts(tmp_path):
    import paramiko

    from harness.target.inventory import Target, TargetEntry
    key = paramiko.RSAKey.generate(1024)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:2299 ssh-rsa {key.get_base64()}\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host box\n  HostName 127.0.0.1\n  Port 2299\n  User root\n  UserKnownHostsFile {kh}\n")
    entry = TargetEntry(url="ssh://box", ssh_config=str(cfg))
    conn = FabricRemote._connection(Target("box", parse_url("ssh://box"), entry))
    assert isinstance(conn.client._policy, paramiko.RejectPolicy)
    assert (conn.host, conn.port, conn.user) == ("127.0.0.1", 2299, "root")
    assert conn.client.get_host_keys() == {} and "[127.0.0.1]:2299" in conn.client._system_host_keys
    assert known_hosts_files(conn.ssh_config) == [kh, Path("/etc/ssh/ssh_known_hosts"),
                                                  Path("/etc/ssh/ssh_known_hosts2")]
    assert "password" not in json.dumps({k: str(v) for k, v in conn.connect_kwargs.items() if v})
