"""Kernel deploy on a remote target (harness/target/deploy.py) through the runner, over the fake
fabric Connection: the cell's kernel is built, kexec'd with the target's and the cell's command
line and a marker, recognised by a new boot id and the marker, recorded like a VM's kernel, and
the target's own kernel is booted again after the run. Each way it can go wrong (kexec refuses
the image, the target falls back to its previous kernel, it stays down, it reports another
release, the build has no kexec for the next deploy, the kernel complains in its log) fails the
cell with its reason while the matrix goes on."""

import textwrap

import pytest
from test_target_ssh import REC, remote_run, write_experiment

from harness import records
from harness.errors import SpecError
from harness.guest.fake import FakeKernels
from harness.kernel.cache import BuildCache
from harness.records import CellResult
from harness.runner import Runner
from harness.spec import load_experiment
from harness.target import deploy, fake
from harness.target.ssh import SshBackend

BOX = ('{url: "ssh://root@box.example:2222", deploy: kexec, cmdline: [root=/dev/vda, rw, console=ttyS0, '
       'panic=-1], connect_timeout_s: 5, reconnect_s: 1%s}')


@pytest.fixture(autouse=True)
def _no_user_inventory(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_TARGETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def inventory(tmp_path, extra=""):
    (tmp_path / "targets.yaml").write_text(f"targets:\n  box: {BOX % extra}\n")


def deploy_run(tmp_path, target=None, body="", extra="", machine="target: box", kernels=None):
    return remote_run(tmp_path, target, body=body, machine=machine, targets=f"targets:\n  box: {BOX % extra}\n",
                      builder=kernels or FakeKernels(tmp_path / "kernels"))


def rec(out) -> CellResult:
    return records.read(out.dir / records.CELL_RESULT, CellResult)


def leftovers(t: fake.FakeTarget) -> list[str]:
    work = t.root / "var/tmp/agent-latency"
    return sorted(p.name for p in work.iterdir()) if work.is_dir() else []


def test_a_deployed_cell_runs_on_the_cells_kernel_and_the_target_gets_its_own_back(tmp_path):
    r, t, (out,) = deploy_run(tmp_path)
    assert out.status == "ok", out.reason
    x = rec(out)
    # the kernel is the cell's, recorded as a VM's; the platform is the simulated one it carries
    assert x.kernel.key == "fake-x86_64-agent-off" and x.kernel.release == "6.12.0-fake"
    assert x.guest.platform == "simulated" and x.guest.backend == "ssh" and x.target.name == "box"
    assert x.platform.energy_per_step_uj and x.platform.energy_source != "none"
    line = x.guest.kernel_cmdline
    assert line[:4] == ["root=/dev/vda", "rw", "console=ttyS0", "panic=-1"]
    assert line[-1].startswith(deploy.MARKER) and len(line[-1]) == len(deploy.MARKER) + 16
    # the target booted exactly that line, then its own again (restore: reboot)
    assert t.boots == [fake.FakeTarget.cmdline, " ".join(line), fake.FakeTarget.cmdline]
    assert x.target.kernel_release == "6.12.0-fake" and x.target.facts["deploy"].startswith("kexec, back after")
    log = (out.dir / "console.log").read_text()
    assert "kexec into 6.12.0-fake" in log and "the target runs 6.12.0-fake" in log
    assert "--- the kernel's log on the target (dmesg) ---" in log and "Linux version 6.12.0-fake" in log
    # nothing of the deploy stays on the target: the image went with the kexec, the directories after
    assert leftovers(t) == []
    assert (t.root / "proc/sys/kernel/osrelease").read_text().strip() == fake.FACTS["kernel_release"]


def test_cells_on_the_same_kernel_and_line_deploy_once_another_line_deploys_again(tmp_path):
    body = """\
    variants:
      - {name: a}
      - {name: b}
      - {name: c, set: {machine.cmdline: [nosmt]}}
    """
    r, t, outs = deploy_run(tmp_path, body=body)
    assert [o.status for o in outs] == ["ok"] * 3, [o.reason for o in outs]
    a, b, c = (rec(o) for o in outs)
    assert a.target.facts["deploy"].startswith("kexec") and b.target.facts["deploy"] == "already running"
    assert c.target.facts["deploy"].startswith("kexec") and "nosmt" in c.guest.kernel_cmdline
    assert a.guest.kernel_cmdline[-1] == b.guest.kernel_cmdline[-1] != c.guest.kernel_cmdline[-1]
    assert len(t.boots) == 4 and t.boots[-1] == t.boots[0]   # own, a (b too), c, own again


def test_deploy_cells_resume_and_the_fingerprint_names_the_build_and_the_targets_line(tmp_path):
    r, t, (out,) = deploy_run(tmp_path)
    first = rec(out).fingerprint
    # the same run again: resumed, nothing deployed, nothing to restore
    t2 = fake.FakeTarget(tmp_path / "remote2", REC)
    _, t2, (again,) = deploy_run(tmp_path, t2)
    assert again.status == "skipped" and t2.connections == 0
    # another build, or another line for the target: run again
    _, _, (other,) = deploy_run(tmp_path, fake.FakeTarget(tmp_path / "remote3", REC),
                                kernels=FakeKernels(tmp_path / "kernels", release="6.12.0-fake", symbols=("x",)))
    assert other.status == "skipped"   # same key: the fake build's key is its variant's
    _, _, (line,) = deploy_run(tmp_path, fake.FakeTarget(tmp_path / "remote4", REC), extra=", restore: none")
    assert line.status == "skipped"    # restore is not part of what was measured
    (tmp_path / "targets.yaml").write_text((tmp_path / "targets.yaml").read_text().replace("panic=-1", "panic=5"))
    le = load_experiment(tmp_path / "remote.yaml")
    r5 = Runner(le, tmp_path / "results", cache=BuildCache(tmp_path / "cache"), builder=FakeKernels(tmp_path / "k"),
                poll_s=0.05, target_backend=lambda tg: SshBackend(
                    BuildCache(tmp_path / "cache"), tg, connect=fake.FakeTarget(tmp_path / "remote5", REC).connection,
                    poll_s=0.01, tools_dir=tmp_path / "tools"))
    (changed,) = r5.run()
    assert changed.status == "ok" and rec(changed).fingerprint != first


def test_a_kernel_running_with_another_release_is_not_taken_for_the_cells(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, deployed_release="6.12.0-other")
    r, t, (a, b) = deploy_run(tmp_path, t, body="variants: [{name: a}, {name: b}]\n")
    for o in (a, b):   # each cell deploys again and is refused again: never run on the wrong kernel
        assert rec(o).failure == "deploy-failed" and "runs 6.12.0-other with the deploy marker" in rec(o).reason
    assert len(t.boots) == 4   # own, a, b, own again (restored: it was a harness kernel)


def test_each_cell_is_checked_for_its_own_kernel_complaints(tmp_path):
    """A complaint logged after cell a read its log is not cell b's; a cell that failed leaves a
    kernel the next one does not reuse."""
    t = fake.FakeTarget(tmp_path / "remote", REC, dmesg_after_cell="WARNING: CPU: 0 PID: 9 at mm/x.c:1 f+0x0/0x1\n")
    r, t, (a, b) = deploy_run(tmp_path, t, body="variants: [{name: a}, {name: b}]\n")
    assert (a.status, b.status) == ("ok", "ok"), (a.reason, b.reason)
    assert rec(b).target.facts["deploy"] == "already running"
    assert "since this cell began" in (b.dir / "console.log").read_text()
    # a splat during a: a fails, b boots the kernel afresh
    t = fake.FakeTarget(tmp_path / "remote-s", REC)
    t.after_launch = lambda work: setattr(t, "log", t.log + "WARNING: CPU: 1 PID: 3 at kernel/x.c:2 g+0x0/0x1\n")
    (tmp_path / "s").mkdir()
    r, t, (a, b) = deploy_run(tmp_path / "s", t, body="variants: [{name: a}, {name: b}]\n")
    assert rec(a).failure == "splat" and rec(b).failure == "splat"   # every boot of it complains during a run
    assert len(t.boots) == 4 and t.boots[1] == t.boots[2]            # b booted the same line afresh


def test_a_non_root_user_deploys_through_sudo_and_restore_none_leaves_the_kernel(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC)
    t.facts["uid"] = "1000"
    r, t, (out,) = deploy_run(tmp_path, t, extra=", restore: none")
    assert out.status == "ok", out.reason
    assert any(c.startswith("sudo -n sh ") and c.split()[3].endswith("/deploy.sh") for c in t.commands)
    assert len(t.boots) == 2 and "harness.deploy=" in t.boots[-1]   # left on the cell's kernel


def test_a_kernel_that_does_not_boot_falls_back_and_fails_its_cells_the_matrix_goes_on(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, kexec="falls-back")
    body = "variants: [{name: a}, {name: b}]\n"
    r, t, outs = deploy_run(tmp_path, t, body=body)
    for o in outs:
        x = rec(o)
        assert o.status == "failed" and x.failure == "deploy-failed", o.reason
        assert f"on {fake.FACTS['kernel_release']} without the cell's kernel fake-x86_64-agent-off" in x.reason
        assert "fallback" in x.reason and x.kernel.key == "fake-x86_64-agent-off"
    assert len(t.boots) == 3 and set(t.boots) == {fake.FakeTarget.cmdline}   # two fallbacks, no restore needed


def test_a_target_that_stays_down_fails_the_cell_and_the_next_cannot_connect(tmp_path, capsys):
    t = fake.FakeTarget(tmp_path / "remote", REC, kexec="stays-down")
    r, t, (a, b) = deploy_run(tmp_path, t, body="variants: [{name: a}, {name: b}]\n", extra=", deploy_timeout_s: 5")
    ra, rb = rec(a), rec(b)
    assert ra.failure == "target-down" and "did not come back within 5 s of kexec into the cell's kernel" in ra.reason
    assert rb.failure == "target-unreachable" and "connection refused" in rb.reason
    assert "box: not restored" in capsys.readouterr().out


def test_a_kexec_that_never_happens_is_not_taken_for_a_target_down(tmp_path):
    t = fake.FakeTarget(tmp_path / "remote", REC, kexec="ignored")
    r, t, (out,) = deploy_run(tmp_path, t, extra=", deploy_timeout_s: 5")
    x = rec(out)
    assert x.failure == "deploy-failed" and "still runs the boot it ran before" in x.reason, x.reason
    assert len(t.boots) == 1


@pytest.mark.parametrize("case,failure,words", [
    ("refused", "deploy-failed", "refused the cell's kernel fake-x86_64-agent-off (exit 4): kexec_load failed"),
    ("release", "deploy-failed", "runs 6.12.0-other with the deploy marker, the build fake-x86_64-agent-off is "
                                 "6.12.0-fake"),
    ("splat", "splat", "the kernel complained (1x): WARNING: CPU: 1 PID: 7 at kernel/sched/core.c:42"),
])
def test_deploy_faults_fail_the_cell_with_the_reason(tmp_path, case, failure, words):
    t = fake.FakeTarget(tmp_path / "remote", REC, kexec="refused" if case == "refused" else "boots")
    if case == "release":
        t.deployed_release = "6.12.0-other"
    if case == "splat":
        t.dmesg += "WARNING: CPU: 1 PID: 7 at kernel/sched/core.c:42 resched_curr+0x1/0x2\n"
    r, t, (out,) = deploy_run(tmp_path, t)
    x = rec(out)
    assert out.status == "failed" and x.failure == failure and words in x.reason, x.reason
    assert leftovers(t) == [] or case == "splat" and not any(n.startswith("k-") for n in leftovers(t))
    assert not [p for p in t.root.rglob("kernel") if p.is_file()]   # the image never stays on the target


def test_a_build_without_kexec_cannot_be_deployed(tmp_path):
    # kexec_file_load alone is not enough: kexec-tools 2.0.25's `kexec -l` calls kexec_load
    r, t, (out,) = deploy_run(tmp_path, kernels=FakeKernels(tmp_path / "kernels", config="CONFIG_KEXEC_FILE=y\n"))
    x = rec(out)
    assert x.failure == "kernel-build" and "has no kexec (CONFIG_KEXEC)" in x.reason
    assert t.connections == 0 and len(t.boots) == 1   # refused before the target was asked anything


def test_deploy_in_the_spec_and_the_inventory(tmp_path):
    # a kernel command line and virtual time need a target that deploys / keeps virtual time
    (tmp_path / "targets.yaml").write_text(textwrap.dedent("""\
        targets:
          own: {url: "ssh://root@own.example"}
          box: {url: "ssh://root@box.example", deploy: kexec, cmdline: [root=/dev/vda], clock: virtual}
          norm: {url: "ssh://root@norm.example", deploy: kexec, cmdline: [root=/dev/sda2]}
        fleets:
          mixed: [box, norm]
        """))
    ok = load_experiment(write_experiment(tmp_path, machine="target: box, cmdline: [nosmt], timing: virtual"))
    (cell,) = ok.cells
    assert cell.deploys and cell.simulated
    own = load_experiment(write_experiment(tmp_path, machine="target: own"))
    assert not own.cells[0].deploys and not own.cells[0].simulated
    for machine, field_, words in (
            ("target: own, cmdline: [nosmt]", "machine.cmdline", "needs a target with `deploy: kexec`"),
            ("target: norm, timing: virtual", "machine.timing", "this target runs in real time"),
            ("target: box, timing: realtime", "machine.timing", "its clock is virtual"),
            ("target: mixed", "machine.target", "mixes targets that deploy kernels or keep virtual time")):
        with pytest.raises(SpecError) as e:
            load_experiment(write_experiment(tmp_path, machine=machine))
        assert field_ in str(e.value) and words in str(e.value), str(e.value)
    # the inventory: deploy needs a root=, and harness.* on the target's line is refused
    for entry, words in (('{url: "ssh://b", deploy: kexec}', "needs the deployed kernel's command line"),
                         ('{url: "ssh://b", deploy: kexec, cmdline: [root=/dev/vda, harness.deploy=x]}',
                          "harness.* parameters are the harness's own"),
                         ('{url: "ssh://b", deploy: kexec, cmdline: ["root=/dev/vda;reboot"]}',
                          "not a single kernel parameter token")):
        (tmp_path / "targets.yaml").write_text(f"targets:\n  b: {entry}\n")
        with pytest.raises(SpecError) as e:
            load_experiment(write_experiment(tmp_path, machine="target: b"))
        assert "targets.yaml:2:" in str(e.value) and words in str(e.value), str(e.value)
    # a cell may not set the marker itself
    inventory(tmp_path)
    with pytest.raises(SpecError) as e:
        load_experiment(write_experiment(tmp_path, machine="target: box, cmdline: [harness.deploy=0]"))
    assert "machine.cmdline" in str(e.value)


def test_testbox_run_refuses_bad_input_before_any_boot(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    from harness.target import testbox

    def no_boot(*a, **kw):
        raise AssertionError("the box was booted for input that cannot run")
    monkeypatch.setattr(testbox, "running_box", no_boot)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    f = write_experiment(tmp_path, machine="timing: auto")   # a local cell only
    assert main(["testbox", "run", str(f), *cache]) == 2
    assert "no cell has machine.target: testbox" in capsys.readouterr().err
    f = write_experiment(tmp_path, machine="target: testbox", body="""\
    variants:
      - {name: a}
      - {name: b, set: {machine.cpus: 1}}
    """)
    assert main(["testbox", "run", str(f), *cache]) == 2
    assert "ask for different machines" in capsys.readouterr().err
    assert not list((tmp_path / "cache" / "tmp").glob("testbox-check-*"))   # the stand-in inventory is gone


def test_the_status_poll_interval_comes_from_the_inventory(tmp_path):
    inventory(tmp_path, ", status_poll_s: 10")
    (cell,) = load_experiment(write_experiment(tmp_path, machine="target: box")).cells
    b = SshBackend(BuildCache(tmp_path / "cache"), cell.targets[0])
    assert b.poll_s == 10 and b.deployer.poll_s == 5   # a rebooting target is looked for every 5 s at most
    inventory(tmp_path, ", status_poll_s: 0.1")
    with pytest.raises(SpecError, match="status_poll_s"):
        load_experiment(write_experiment(tmp_path, machine="target: box"))
