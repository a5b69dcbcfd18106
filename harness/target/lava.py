"""Board farms: a LAVA job definition per cell, and reading its results back.

LAVA (the dispatcher behind KernelCI's farms) boots a device, runs test definitions and keeps the
serial log; it has no way to copy files back from the device. So the job's inline test carries
the cell's inputs (the guest script, probe scripts, wait times: the host's own files, as a
base64 tar) and the workload binary's URL, runs the very guest script a VM runs with the share at
/mnt and the tools at /opt, and then prints each file of the share between markers:

    <<<HARNESS-FILE name size sha256>>>
    base64 lines
    <<<HARNESS-END name>>>

`files_from_log` takes them back out of the job's log (the device is untrusted: plain names
only, the share's size caps, base64 and the digest checked, anything else refused and named),
into a share directory that the runner's collect stage reads as it reads a VM's. Each repeat's
exit status also becomes a `lava-test-case`, so LAVA's own result view shows the run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.guest import protocol, share
from harness.target.remote import safe_name
from harness.target.ssh import file_limit

BEGIN = "<<<HARNESS-FILE"
END = "<<<HARNESS-END"
_BEGIN = re.compile(r"^<<<HARNESS-FILE ([A-Za-z0-9._-]{1,128}) ([0-9]{1,12}) ([0-9a-f]{64})>>>$")
LOG_LIMIT = 2 << 30
QEMU_CONTEXT = {"x86_64": {"arch": "amd64", "extra_options": ["-smp 2", "-m 1024", "-cpu max"]},
                "arm64": {"arch": "arm64", "machine": "virt", "cpu": "cortex-a57",
                          "extra_options": ["-smp 2", "-m 1024"]}}

# On the device, after the test's own setup: run the guest script, then print the share.
_DUMP = (f'for f in /mnt/*; do [ -f "$f" ] || continue; n=${{f##*/}}; '
         f'echo "{BEGIN} $n $(stat -c %s "$f") $(sha256sum "$f" | cut -d" " -f1)>>>"; base64 "$f"; '
         f'echo "{END} $n"; done')


def _inputs_tar(inputs: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(inputs):
            data = inputs[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def test_steps(inputs: dict[str, bytes], workload_url: str, repeats: int, workload_sha256: str) -> list[str]:
    """The inline test's shell lines (LAVA runs each in one shell on the device, stopping at the
    first that fails). The workload: a rootfs that ships this very build at /opt/agentloop (by its
    digest) is used as it is, one without a fetcher included; otherwise it is fetched, and the
    digest checked either way."""
    payload = _inputs_tar(inputs)
    check = f"echo '{workload_sha256}  /opt/agentloop' | sha256sum -c -"
    steps = [
        "mkdir -p /mnt /opt && rm -rf /mnt/* && cd /",
        f"echo {payload} | base64 -d | tar -xz -C /mnt",
        f"{check} >/dev/null 2>&1 || wget -q -O /opt/agentloop {workload_url} || "
        f"curl -fsS -o /opt/agentloop {workload_url}",
        check,
        "chmod 755 /opt/agentloop",
        f"sh {protocol.GUEST_RESULTS}/{protocol.GUEST_SCRIPT} > /tmp/harness-console.log 2>&1; echo rc=$?",
    ]
    for r in range(repeats):
        key = protocol.Key.repeat_exit(r)
        steps.append(f"grep -q '^{key}=0$' /mnt/{protocol.STATUS} && lava-test-case repeat-{r} --result pass "
                     f"|| lava-test-case repeat-{r} --result fail")
    steps.append(f"grep -q '^{protocol.Key.WORKLOAD_EXIT}=0$' /mnt/{protocol.STATUS} && lava-test-case agent-loop "
                 "--result pass || lava-test-case agent-loop --result fail")
    steps.append(_DUMP)
    return steps


def job(cell_id: str, arch: str, inputs: dict[str, bytes], kernel_url: str, rootfs_url: str, workload_url: str,
        repeats: int, workload_sha256: str, timeout_min: int = 60, cmdline: tuple[str, ...] = (),
        device_type: str = "qemu") -> dict:
    """A LAVA v2 job for one cell on a QEMU device (or another device type with the same deploy
    and boot keys: a real board's farm admin gives those; the test part does not change)."""
    append = " ".join(("root=/dev/vda", "rw", "console=ttyS0" if arch == "x86_64" else "console=ttyAMA0",
                       *cmdline))
    return {
        "device_type": device_type,
        "job_name": f"agent-latency {cell_id}",
        "priority": "medium",
        "visibility": "public",
        "timeouts": {"job": {"minutes": timeout_min + 20}, "action": {"minutes": timeout_min},
                     "connection": {"minutes": 2}},
        "context": QEMU_CONTEXT[arch],
        "metadata": {"harness.cell": cell_id, "harness.arch": arch},
        "actions": [
            {"deploy": {"timeout": {"minutes": 10}, "to": "tmpfs", "images": {
                "kernel": {"image_arg": f"-kernel {{kernel}} -append \"{append}\"", "url": kernel_url},
                "rootfs": {"image_arg": "-drive format=raw,if=virtio,file={rootfs}", "url": rootfs_url}}}},
            {"boot": {"timeout": {"minutes": 15}, "method": "qemu", "media": "tmpfs",
                      "prompts": ["root@[a-z0-9-]+:~#"],
                      "auto_login": {"login_prompt": "login:", "username": "root"}}},
            {"test": {"timeout": {"minutes": timeout_min}, "definitions": [{
                "from": "inline", "name": "agent-latency", "path": "inline/agent-latency.yaml",
                "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "agent-latency",
                                            "description": f"agent loop cell {cell_id}"},
                               "run": {"steps": test_steps(inputs, workload_url, repeats, workload_sha256)}}}]}},
        ],
    }


def dump(job_def: dict) -> str:
    return yaml.safe_dump(job_def, sort_keys=False, width=1 << 20)


@dataclass
class LogFiles:
    files: dict[str, bytes] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def _log_entries(log_text: str) -> list | None:
    """The {dt, lvl, msg} entries of a LAVA log: the server's job log is a YAML list of them,
    `lava-run`'s own output one object a line (JSON, but for a YAML tag in results lines:
    `"endtc": ! "713"`; YAML reads both). None: not a LAVA log."""
    try:
        entries = yaml.safe_load(log_text)
    except yaml.YAMLError:
        entries = None
    if isinstance(entries, list) and all(isinstance(e, dict) for e in entries[:10]):
        return entries
    first = log_text.lstrip()[:1]
    if first != "{":
        return None
    out = []
    for line in log_text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            try:
                e = yaml.safe_load(line) if len(line) < 65536 else None
            except yaml.YAMLError:
                continue
        if isinstance(e, dict):
            out.append(e)
    return out or None


def _log_lines(log_text: str) -> list[str]:
    """The device's serial lines out of a LAVA log; a plain serial log is taken as it is."""
    entries = _log_entries(log_text)
    if entries is None:
        return log_text.splitlines()
    out = []
    for e in entries:
        if e.get("lvl") in ("target", "feedback") and isinstance(e.get("msg"), str):
            out += e["msg"].splitlines()
    return out


def files_from_log(log_text: str) -> LogFiles:
    """The share's files out of a job log, each checked (name, size cap, base64, sha256)."""
    if len(log_text) > LOG_LIMIT:
        raise ValueError(f"the job log is {len(log_text)} characters, more than {LOG_LIMIT}")
    out = LogFiles()
    lines = _log_lines(log_text)
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith(BEGIN):
            continue
        m = _BEGIN.match(line)
        if not m or not safe_name(m.group(1)):
            out.refused.append(f"a file header that is not one of ours: {share.excerpt(line, 80)!r}")
            continue
        name, size, digest = m.group(1), int(m.group(2)), m.group(3)
        limit = file_limit(name)
        chunks, total, ended = [], 0, False
        while i < len(lines):
            body = lines[i].strip()
            i += 1
            if body == f"{END} {name}":
                ended = True
                break
            if body.startswith("+ "):   # the test shell's xtrace (set -x), on the same console
                continue
            total += len(body)
            if total > limit * 4 // 3 + 4096:
                break
            chunks.append(body)
        if size > limit:
            out.refused.append(f"{name}: {size} bytes, more than the {limit}-byte limit")
            continue
        if not ended:
            out.refused.append(f"{name}: no end marker within its limit")
            continue
        try:
            data = base64.b64decode("".join(chunks), validate=True)
        except (binascii.Error, ValueError):
            out.refused.append(f"{name}: not base64")
            continue
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            out.refused.append(f"{name}: size or sha256 does not match its header")
            continue
        if name in out.files:
            out.refused.append(f"{name}: given twice (the first kept)")
            continue
        out.files[name] = data
    return out


def write_share(got: LogFiles, share_dir: Path) -> None:
    """The files into a share directory (new files only: the host's inputs are never overwritten)."""
    for name, data in got.files.items():
        if (share_dir / name).exists():
            continue
        with share.create_exclusive(share_dir / name) as fh:
            fh.write(data)


def results(results_yaml: str) -> dict[str, str]:
    """LAVA's results (the REST API's or `lavacli results` YAML): test case name -> pass/fail/skip."""
    data = yaml.safe_load(results_yaml) or []
    if isinstance(data, dict):
        data = data.get("results", [])
    out = {}
    for r in data if isinstance(data, list) else []:
        if isinstance(r, dict) and isinstance(r.get("name"), str) and r.get("result") in ("pass", "fail", "skip",
                                                                                         "unknown"):
            out[share.excerpt(r["name"], 80)] = r["result"]
    return out


def results_from_log(log_text: str) -> dict[str, str]:
    """The test cases' results out of a job log (a local `lava-run` leaves no results YAML of
    them): test case name -> pass/fail/skip; LAVA's own bookkeeping cases (definition "lava") left out."""
    out = {}
    for e in _log_entries(log_text) or []:
        m = e.get("msg")
        if e.get("lvl") == "results" and isinstance(m, dict) and m.get("definition") != "lava" and \
                isinstance(m.get("case"), str) and m.get("result") in ("pass", "fail", "skip", "unknown"):
            out[share.excerpt(m["case"], 80)] = m["result"]
    return out
