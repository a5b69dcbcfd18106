"""The remote flow against a real sshd: the QEMU test box (harness/target/testbox.py: Debian 12,
openssh-server, a throwaway ed25519 key and host key, known_hosts and ssh_config of the test's
own; nothing under ~/.ssh is read or written) on a port forwarded to 127.0.0.1, driven through the
CLI's runner exactly as a board would be. Then the faults: connection refused, a host-key
mismatch and an unknown host key, sshd killed mid-run (back at once: the cell survives; gone for
good: the cell fails, the next cell fails to connect, and a later run redoes both). Last, kernel
deploy: kexec into a harness kernel, two cells on it, and the box's own kernel again; then a
kernel that panics and one that hangs, each brought back by the box's fallback (a panic reboot,
the watchdog).

Slow (a TCG boot of Debian and bpftrace under TCG): `nox -s tests-remote`, not in CI's set."""

import re
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness import records
from harness.guest import protocol
from harness.kernel.cache import BuildCache
from harness.records import CellResult
from harness.runner import Runner
from harness.spec import load_experiment
from harness.target import testbox

pytestmark = pytest.mark.remote


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with testbox.running_box(BuildCache(), workdir=tmp_path_factory.mktemp("sshbox")) as b:
        print(f"test box up in {b.boot_s:.0f} s on port {b.port}")
        yield b


def setup(tmp_path, box, body: str, known_hosts: Path | None = None, reconnect_s: int = 60,
          url: str = "ssh://testbox") -> Path:
    cfg = box.keys.ssh_config
    if known_hosts is not None:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(box.keys.ssh_config.read_text().replace(str(box.keys.known_hosts), str(known_hosts)))
    (tmp_path / "targets.yaml").write_text(textwrap.dedent(f"""\
        targets:
          testbox: {{url: "{url}", ssh_config: "{cfg}", reconnect_s: {reconnect_s}, connect_timeout_s: 20,
                     status_poll_s: 1}}
        """))
    f = tmp_path / "remote.yaml"
    f.write_text(textwrap.dedent(body))
    return f


def run(path: Path, tmp_path: Path, **kw):
    r = Runner(load_experiment(path), tmp_path / "results", poll_s=1.0, **kw)
    return r, r.run()


def rec(out) -> CellResult:
    return records.read(out.dir / records.CELL_RESULT, CellResult)


def guest_ssh(box, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(box.keys.ssh_config), "-o", "BatchMode=yes", "testbox", command],
                          capture_output=True, text=True, timeout=120)


FLOW = """\
name: remote_flow
machine: {cpus: 2, target: testbox}
workload: {steps: 300, warmup: 30, compute_units: 20000, wait: {kind: futex, distribution: exponential, us: 2000}}
probes: [wakeup_latency]
repeats: 2
variants:
  - {name: stock}
  - {name: knobs, set: {platform.idle_governor: menu, platform.pm_qos_latency_us: 0}}
  - {name: cpufreq, set: {platform.governor: performance}}
"""


def test_remote_flow_end_to_end(tmp_path, box, monkeypatch):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    t0 = time.monotonic()
    r, outs = run(setup(tmp_path, box, FLOW), tmp_path)
    print(f"remote flow: {time.monotonic() - t0:.0f} s for {len(outs)} cells")
    stock, knobs, cpufreq = outs
    for o in (stock, knobs):
        assert o.status == "ok", o.reason
        x = rec(o)
        assert x.guest.platform == "real" and x.guest.backend == "ssh" and x.target.name == "testbox"
        assert x.target.kernel_release.endswith("-amd64") and "QEMU" in x.target.cpu_model
        assert x.target.cpuidle_governor == "menu" and x.target.cpufreq_driver == "none"
        assert x.platform.energy_source == "none" and x.platform.energy_per_step_uj is None
        assert x.stats.steps == 600 and x.probes["wakeup_latency"] and x.probed_run.steps == 300
        assert 0 < x.stats.wake_p50_us < 100_000
        assert (o.dir / records.CELL_STEPS).is_file() and (o.dir / "probe-wakeup_latency.csv").is_file()
        # Debian's util-linux flock: the host waited on the run's lock, not by polling
        assert "waiting on its lock (flock), a look at its status every 1 s" in (o.dir / "console.log").read_text()
    assert rec(knobs).guest.platform_requested["pm_qos_latency_us"] == 0
    # a knob the target cannot take fails its cell, naming the file; the others ran
    x = rec(cpufreq)
    assert x.failure == "platform-failed" and "scaling_governor" in x.reason
    index = records.read(r.run_dir / records.RUN_INDEX, records.RunIndex)
    assert set(index.cells) == {"x86_64-stock", "x86_64-knobs", "x86_64-cpufreq"}
    # the work directories are gone from the target
    assert guest_ssh(box, "ls -A /var/tmp/agent-latency").stdout.strip() == ""


SMALL = """\
name: remote_fault
machine: {cpus: 2, target: testbox}
workload: {steps: 100, warmup: 10, compute_units: 20000, wait: {kind: futex, us: 1000}}
repeats: 1
"""


def test_connection_refused_fails_the_cell_clearly(tmp_path, box, monkeypatch):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    port = testbox.free_port()   # nothing listens there
    f = setup(tmp_path, box, SMALL + "variants: [{name: a}, {name: b}]\n", url=f"ssh://root@127.0.0.1:{port}")
    _, outs = run(f, tmp_path)
    for o in outs:
        assert o.status == "failed" and rec(o).failure == "target-unreachable"
        assert "connection refused" in o.reason.lower(), o.reason


@pytest.mark.parametrize("case", ["mismatch", "unknown"])
def test_host_key_problems_refuse_the_connection(tmp_path, box, monkeypatch, case):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    if case == "mismatch":
        kh = box.keys.wrong_known_hosts()
    else:
        kh = tmp_path / "empty_known_hosts"
        kh.write_text("")
    before = kh.read_bytes()
    (o,) = run(setup(tmp_path, box, SMALL, known_hosts=kh), tmp_path)[1]
    x = rec(o)
    assert o.status == "failed" and x.failure == "host-key", o.reason
    assert ("HOST KEY MISMATCH" if case == "mismatch" else "not in known_hosts") in x.reason
    assert kh.read_bytes() == before   # never written to (fabric's default would have added the key)
    assert guest_ssh(box, "ls -A /var/tmp/agent-latency 2>/dev/null").stdout.strip() == ""   # nothing ran


LONG = """\
name: remote_kill
machine: {cpus: 2, target: testbox}
workload: {steps: 2500, warmup: 50, compute_units: 20000, wait: {kind: futex, us: 2000}}
repeats: 2
variants: [{name: a}, {name: b}]
"""


def _kill_sshd_when_started(box, results: Path, command: str) -> threading.Thread:
    """Once a cell's status says the workload started, kill every sshd in the box (the harness's
    connection with them) from a transient unit of the box's own systemd."""
    def go():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for status in results.glob(f"*/*/{protocol.SHARE}/{protocol.STATUS}"):
                if protocol.Key.WORKLOAD_START in protocol.parse_status(status.read_text(errors="replace")):
                    time.sleep(2)
                    guest_ssh(box, f"systemd-run --no-block sh -c {command!r}")
                    return
            time.sleep(0.5)
    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


def test_sshd_killed_mid_run_and_back_loses_nothing(tmp_path, box, monkeypatch):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    f = setup(tmp_path, box, LONG.replace("variants: [{name: a}, {name: b}]\n", ""), reconnect_s=120)
    th = _kill_sshd_when_started(box, tmp_path / "results", "kill -KILL $(pidof sshd)")   # systemd restarts it
    (o,) = run(f, tmp_path)[1]
    th.join(1)
    assert o.status == "ok", o.reason
    assert "lost the connection during the workload" in (o.dir / "console.log").read_text()
    assert rec(o).stats.steps == 5000


def test_sshd_gone_fails_the_cell_the_matrix_goes_on_and_a_rerun_completes(tmp_path, box, monkeypatch):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    f = setup(tmp_path, box, LONG, reconnect_s=8)
    th = _kill_sshd_when_started(box, tmp_path / "results", "systemctl stop ssh.service; kill -KILL $(pidof sshd); "
                                 "sleep 45; systemctl start ssh.service")
    a, b = run(f, tmp_path)[1]
    th.join(1)
    ra, rb = rec(a), rec(b)
    assert ra.failure == "target-lost" and "could not reconnect within 8 s" in ra.reason, ra.reason
    assert protocol.Key.WORKLOAD_START in ra.guest.status       # what it reported before is kept
    # QEMU's forwarding accepts the connection and closes it when nothing listens in the box
    assert rb.failure == "target-unreachable" and "no SSH server answered" in rb.reason, rb.reason
    testbox.wait_for_ssh(box.port, 120)
    time.sleep(2)
    a2, b2 = run(f, tmp_path)[1]
    assert (a2.status, b2.status) == ("ok", "ok"), (a2.reason, b2.reason)


# -- kernel deploy: kexec into a harness kernel and back, and kernels that do not boot ------------------
# The cells' kernel is dvfs_ramp's stock kernel with the testbox fragment (virtio-net, kexec, the
# box's watchdog): built once and cached like any other. These run last: each leaves the box on
# its own Debian kernel again (the restore, or the fallback), which the tests above expect.

DEPLOY = """\
name: remote_deploy
kernel: {source: debian, series: [sim-platform, agent-latency],
         fragments: [base, tracing, platform, sim-platform, testbox], agent_latency: false}
machine: {cpus: 2, target: testbox}
platform: {governor: schedutil, idle_governor: menu, sim: {preset: x86-skl-client}}
workload: {steps: 200, warmup: 20, compute_units: 20000, wait: {kind: futex, us: 2000}}
probes: [wakeup_latency]
repeats: 2
variants:
  - {name: stock}
  - {name: floor, set: {platform.governor: performance, platform.idle_poll: true}}
"""


def deploy_setup(tmp_path, box, cmdline=testbox.DEPLOY_CMDLINE, body=DEPLOY, **extra) -> Path:
    import yaml
    entry = testbox.inventory_entry(box, cmdline=cmdline, **extra)
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"targets": {"testbox": entry}}))
    f = tmp_path / "deploy.yaml"
    f.write_text(body)
    return f


def box_kernel(box) -> tuple[str, str]:
    r = guest_ssh(box, "uname -r; cat /proc/cmdline")
    release, cmdline = (r.stdout.splitlines() + ["", ""])[:2]
    return release, cmdline


def test_kexec_into_the_cells_kernel_runs_it_there_and_reboots_into_the_boxs_own(tmp_path, box, monkeypatch):
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    own_release, _ = box_kernel(box)
    left = set(guest_ssh(box, "ls -A /var/tmp/agent-latency").stdout.split())   # a lost cell's files stay
    t0 = time.monotonic()
    r, (stock, floor) = run(deploy_setup(tmp_path, box), tmp_path)
    print(f"deploy flow: {time.monotonic() - t0:.0f} s")
    for o in (stock, floor):
        assert o.status == "ok", o.reason
    a, b = rec(stock), rec(floor)
    # the cell's kernel ran on the box, recorded as a VM's, on the simulated platform it carries
    assert a.kernel.key == b.kernel.key and a.target.kernel_release == a.kernel.release != own_release
    assert a.guest.platform == "simulated" and a.platform.energy_per_step_uj > 0
    assert a.guest.kernel_cmdline[0] == "root=/dev/vda" and a.guest.kernel_cmdline[-1].startswith("harness.deploy=")
    assert any(t.startswith("sim_cpufreq.opps=") for t in a.guest.kernel_cmdline)
    assert a.target.cpufreq_driver == "sim-cpufreq"
    # the floor's line differs (idle=poll), so its cell deployed the kernel again
    assert "idle=poll" in b.guest.kernel_cmdline and "idle=poll" not in a.guest.kernel_cmdline
    assert a.target.facts["deploy"].startswith("kexec, back after") and b.target.facts["deploy"].startswith("kexec")
    assert a.stats.steps == 400 and a.probes["wakeup_latency"]
    # the floor variant held on the box: the top OPP all the time
    res = b.platform.freq_residency
    assert res[max(res, key=int)] / sum(res.values()) > 0.99, res
    log = (stock.dir / "console.log").read_text()
    assert "kexec into" in log and "Linux version " + a.kernel.release in log
    # restored: the box runs its own kernel again, without the marker, and nothing of ours is left
    release, cmdline = box_kernel(box)
    assert release == own_release and "harness.deploy=" not in cmdline
    assert set(guest_ssh(box, "ls -A /var/tmp/agent-latency").stdout.split()) == left


PANIC = re.compile(r"^Kernel panic - not syncing: VFS: Unable to mount root fs", re.M)   # not the "end" line


@pytest.mark.parametrize("how", ["panic", "hang"])
def test_a_kernel_that_does_not_boot_falls_back_to_the_boxs_own(tmp_path, box, monkeypatch, how):
    """panic: no root device, panic=-1 reboots at once; hang: the same with panic=0, so only the
    box's watchdog (armed across the kexec, locked, 60 s) brings it back."""
    monkeypatch.setenv("HARNESS_TARGETS", str(tmp_path / "targets.yaml"))
    own_release, _ = box_kernel(box)
    line = ["root=/dev/vdz" if t == "root=/dev/vda" else t for t in testbox.DEPLOY_CMDLINE]
    if how == "hang":
        line = ["panic=0" if t == "panic=-1" else "i6300esb.heartbeat=60" if t.startswith("i6300esb.heartbeat")
                else t for t in line]
    body = DEPLOY.replace("  - {name: floor, set: {platform.governor: performance, platform.idle_poll: true}}\n", "")
    seen = len(PANIC.findall(box.console.read_text(errors="replace")))
    t0 = time.monotonic()
    (o,) = run(deploy_setup(tmp_path, box, cmdline=tuple(line), body=body), tmp_path)[1]
    print(f"{how}: failed in {time.monotonic() - t0:.0f} s")
    x = rec(o)
    assert o.status == "failed" and x.failure == "deploy-failed", o.reason
    assert f"on {own_release} without the cell's kernel {x.kernel.key}" in x.reason
    # the cell's kernel did start, and died where it should: on the box's serial console
    assert len(PANIC.findall(box.console.read_text(errors="replace"))) == seen + 1
    release, cmdline = box_kernel(box)
    assert release == own_release and "harness.deploy=" not in cmdline
    # what brought the box back: the watchdog says whether it fired (WDIOF_CARDRESET, 0x20)
    status = guest_ssh(box, "cat /sys/class/watchdog/watchdog0/bootstatus").stdout.strip()
    assert status == ("32" if how == "hang" else "0"), status
