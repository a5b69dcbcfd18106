"""LAVA jobs per cell and their results read back: the job's shell runs here under sh (its
decode of the host's inputs and its dump of the share), the dump goes through a LAVA-style YAML
log into files_from_log, and the runner's collect reads the result as it reads a VM's share."""

import base64
import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.guest import protocol
from harness.guest.fake import FakeKernels
from harness.kernel.cache import BuildCache
from harness.runner import Runner
from harness.spec import load_experiment
from harness.target import lava

FIXTURES = Path(__file__).parent / "fixtures" / "guest"
REC = FIXTURES / "x86_64"


def plan(tmp_path):
    f = tmp_path / "rec.yaml"
    f.write_text((FIXTURES / "recording.yaml").read_text().replace("arch: [x86_64, arm64]", "arch: [x86_64]"))
    r = Runner(load_experiment(f), tmp_path / "results", cache=BuildCache(tmp_path / "cache"),
               builder=FakeKernels(tmp_path / "k"))
    return r, r.plan()[0]


def inputs_of(p) -> dict[str, bytes]:
    out = {protocol.GUEST_SCRIPT: p.script.encode()}
    out.update({protocol.probe_script(n): t.encode() for n, t in p.probe_scripts.items()})
    return out


def as_lava_log(serial: str) -> str:
    """A LAVA job log: YAML entries, the device's lines at level `target`."""
    entries = [{"dt": "2026-12-02T00:00:00", "lvl": "info", "msg": "start: 3 lava-test-retry"}]
    entries += [{"dt": "2026-12-02T00:00:01", "lvl": "target", "msg": line} for line in serial.splitlines()]
    return yaml.safe_dump(entries)


def test_a_job_per_cell_carries_the_hosts_inputs(tmp_path):
    _, p = plan(tmp_path)
    inputs = inputs_of(p)
    job = lava.job(p.cell.id, "x86_64", inputs, "file:///k/bzImage", "file:///r/rootfs.ext4", "file:///w/agentloop",
                   repeats=2, workload_sha256="0" * 64, cmdline=tuple(p.platform.cmdline))
    again = yaml.safe_load(lava.dump(job))
    assert again == job and again["device_type"] == "qemu" and again["context"]["arch"] == "amd64"
    deploy, boot, test = (next(iter(a.values())) for a in again["actions"])
    assert deploy["images"]["kernel"]["url"] == "file:///k/bzImage" and "sim_cpufreq.opps=" in \
        deploy["images"]["kernel"]["image_arg"]
    assert boot["method"] == "qemu"
    steps = test["definitions"][0]["repository"]["run"]["steps"]
    assert sum("lava-test-case repeat-" in s for s in steps) == 2
    # the decode step, run here with /mnt a temporary directory, gives back exactly the inputs
    mnt = tmp_path / "mnt"
    (mnt / protocol.PROBES_DIR).mkdir(parents=True)
    decode = steps[1].replace("/mnt", str(mnt))
    subprocess.run(["sh", "-c", decode], check=True)
    for name, data in inputs.items():
        assert (mnt / name).read_bytes() == data


@pytest.mark.parametrize("on_rootfs,fetched,ok,fetches", [
    (b"BUILD", None, True, 0),          # the rootfs ships this build: used as it is, no fetcher needed
    (b"stale", b"BUILD", True, 1),      # another build: fetched
    (None, b"BUILD", True, 1),          # none: fetched
    (b"stale", b"wrong", False, 1),     # a fetch of something else: the step fails, the loop never runs
])
def test_the_device_runs_exactly_the_hosts_workload_build(tmp_path, on_rootfs, fetched, ok, fetches):
    steps = lava.test_steps({}, "http://farm/agentloop", 1, hashlib.sha256(b"BUILD").hexdigest())
    opt, bin_ = tmp_path / "opt", tmp_path / "bin"
    opt.mkdir()
    bin_.mkdir()
    if on_rootfs is not None:
        (opt / "agentloop").write_bytes(on_rootfs)
    (bin_ / "sha256sum").symlink_to(shutil.which("sha256sum"))
    wget = bin_ / "wget"          # wget -q -O FILE URL; no curl on this device
    wget.write_text(f"#!/bin/sh\necho \"$4\" >> {tmp_path}/fetches\n" +
                    (f"printf '{fetched.decode()}' > \"$3\"\n" if fetched else "exit 1\n"))
    wget.chmod(0o755)
    script = " && ".join(s.replace("/opt/", f"{opt}/") for s in steps[2:4])
    proc = subprocess.run(["/bin/sh", "-c", script], env={"PATH": str(bin_)}, capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stderr
    calls = (tmp_path / "fetches").read_text().split() if (tmp_path / "fetches").exists() else []
    assert calls == ["http://farm/agentloop"] * fetches


def test_the_jobs_dump_read_back_from_a_lava_log_is_collected_like_a_vm_share(tmp_path):
    r, p = plan(tmp_path)
    device = tmp_path / "device"
    shutil.copytree(REC, device)
    dump = lava._DUMP.replace("/mnt", str(device))
    serial = "login: root\n" + subprocess.run(["sh", "-c", dump], capture_output=True, text=True, check=True).stdout
    got = lava.files_from_log(as_lava_log(serial))
    assert got.refused == []
    for f in REC.iterdir():
        if f.is_file():
            assert got.files[f.name] == f.read_bytes(), f.name
    share_dir = tmp_path / "cell" / protocol.SHARE
    share_dir.mkdir(parents=True)
    lava.write_share(got, share_dir)
    collected = r.collect(p, tmp_path / "cell", share_dir)
    assert collected["stats"].steps == 120 and set(collected["probes"]) == {"wakeup_latency", "dvfs_ramp"}


def test_a_hostile_log_gives_nothing_it_should_not(tmp_path):
    def block(name, data, size=None, digest=None, end=True, body=None):
        header = f"{lava.BEGIN} {name} {len(data) if size is None else size} " \
                 f"{digest or hashlib.sha256(data).hexdigest()}>>>"
        return [header, body if body is not None else base64.b64encode(data).decode()] + \
            ([f"{lava.END} {name}"] if end else [])
    big = b"x" * (2 << 20)
    lines = (block("good.txt", b"fine\n") + block("../etc", b"x") + block("sizes.txt", b"abc", size=4)
             + block("sum.txt", b"abc", digest="0" * 64) + block("notb64.txt", b"abc", body="%%%%")
             + block("workload-r0.err", big) + block("good.txt", b"again\n") + block("open.txt", b"abc", end=False))
    got = lava.files_from_log("\n".join(lines) + "\n")
    assert got.files == {"good.txt": b"fine\n"}
    why = " | ".join(got.refused)
    for words in ("not one of ours", "sizes.txt: size or sha256", "sum.txt: size or sha256", "notb64.txt: not base64",
                  "workload-r0.err: 2097152 bytes, more than the 1048576-byte limit", "good.txt: given twice",
                  "open.txt: no end marker"):
        assert words in why, words


def test_lava_results_parse():
    text = yaml.safe_dump([{"name": "repeat-0", "result": "pass", "suite": "1_agent-latency"},
                           {"name": "agent-loop", "result": "fail"}, {"name": "x", "result": "weird"}, "junk"])
    assert lava.results(text) == {"repeat-0": "pass", "agent-loop": "fail"}


def test_the_cli_writes_a_job_per_cell(tmp_path, capsys):
    f = tmp_path / "rec.yaml"
    f.write_text((FIXTURES / "recording.yaml").read_text())
    assert main(["lava", str(f), "-o", str(tmp_path / "jobs"), "--kernel-url", "http://k/Image",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    jobs = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert jobs == ["arm64-base.yaml", "x86_64-base.yaml"]
    arm = yaml.safe_load((tmp_path / "jobs" / "arm64-base.yaml").read_text())
    assert arm["context"]["arch"] == "arm64" and "console=ttyAMA0" in str(arm["actions"][0])


LAVA_FIXTURES = Path(__file__).parent / "fixtures" / "lava"


def test_a_real_dispatchers_log_gives_the_share_back_and_collects_like_a_vm(tmp_path):
    """tests/fixtures/lava/: what Debian 12's lava-dispatcher (2023.01, `lava-run` in a chroot)
    printed running the job the CLI wrote for experiment.yaml on a QEMU (TCG) device, with the
    hand-written device dictionary beside it (README, "Board farms"). Its JSON-lines log, the test
    shell's xtrace interleaved with the dump, gives back every file of the share, and the runner
    collects them as it collects a VM's."""
    text = gzip.decompress((LAVA_FIXTURES / "lava-run-x86_64.log.gz").read_bytes()).decode()
    assert lava.results_from_log(text) == {"repeat-0": "pass", "agent-loop": "pass"}
    got = lava.files_from_log(text)
    assert got.refused == []
    assert {protocol.STATUS, protocol.GUEST_SCRIPT, "steps-r0.csv", "meter-r0-before.txt",
            "meter-r0-after.txt", "platform-r0-before.txt"} <= set(got.files)
    status = got.files[protocol.STATUS].decode()
    assert "workload_exit=0" in status and "kernel=6.12." in status
    r = Runner(load_experiment(LAVA_FIXTURES / "experiment.yaml"), tmp_path / "results",
               cache=BuildCache(tmp_path / "cache"), builder=FakeKernels(tmp_path / "k"))
    (p,) = r.plan()
    share_dir = tmp_path / "cell" / protocol.SHARE
    share_dir.mkdir(parents=True)
    lava.write_share(got, share_dir)
    collected = r.collect(p, tmp_path / "cell", share_dir, timing="realtime")
    assert collected["stats"].steps == 40 and collected["platform_wrong"] == []
    assert collected["platform"].meter == "steps" and collected["platform"].energy_per_step_uj > 0


def test_a_plain_serial_log_is_not_taken_for_json_lines():
    serial = "{ not json at all\n<<<HARNESS-FILE a.txt 3 " + hashlib.sha256(b"abc").hexdigest() + ">>>\nYWJj\n" \
             "<<<HARNESS-END a.txt\n"
    assert lava.files_from_log(serial).files == {"a.txt": b"abc"}
