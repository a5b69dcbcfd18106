"""The abuser next to the agent (issue 14): the guest script's lines that put the agent and an
unprivileged abuser in sibling cgroups, give the abuser a budget, start it before the loop and stop
it after; and the reading back of what it did and what its cgroup was charged.

Everything the lines contain comes from the validated spec (literals, integers, a budget matching
spec.model.BUDGET) and is quoted all the same: the guest shell never sees an unchecked string.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from harness.guest import platform, share
from harness.guest.protocol import ABUSER, GUEST_RESULTS, AbuserFiles
from harness.records import AbuserResult
from harness.spec.model import AbuserSpec

CGROUP = platform.CGROUP
PARENT = platform.HARNESS_CGROUP      # the agent and the abuser, siblings below it
POLICY = "/proc/sys/kernel/sched_agent_latency"
NOBODY = 65534
# The abuser writes its summary to a tmpfs of its own, owned by the user it runs as, copied to the
# share (root's) at its end: on the arm64 rootfs, nobody could not create a file in /tmp.
RESULT_DIR = "/tmp/harness-abuser"
RESULT_TMP = f"{RESULT_DIR}/abuser.json"
PID_FILE = "/tmp/abuser.pid"


def _mnt(name: str) -> str:
    return f"{GUEST_RESULTS}/{name}"


def abuser_args(a: AbuserSpec) -> list[str]:
    args = [ABUSER, "--kind", a.kind, "--out", RESULT_TMP]
    if a.threads:
        args += ["--threads", str(a.threads)]
    if a.kind == "storm":
        args += ["--sleep-us", str(a.sleep_us or 1000), "--compute-us", str(a.compute_us or 100)]
    if a.cpu is not None:
        args += ["--cpu", str(a.cpu)]
    if not a.mark:
        args.append("--no-mark")
    return args


def setup(a: AbuserSpec) -> list[str]:
    """Lines run before the loop (each must succeed, or the cell fails as a setup failure)."""
    q = shlex.quote
    run = abuser_args(a)
    uid = NOBODY if a.user == "nobody" else 0
    if a.user == "nobody":
        run = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *run]
    join = f"echo $$ > {PARENT}/abuser/cgroup.procs && exec {shlex.join(run)}"
    return [
        f"echo {a.policy} > {POLICY}",
        *platform.cgroup_lines(f"{PARENT}/agent", f"{PARENT}/abuser"),
        f"echo {q(a.budget)} > {PARENT}/abuser/cpu.agent.budget",
        f"echo $$ > {PARENT}/agent/cgroup.procs",     # the script, so the loop and the probes are in it
        f"mkdir -p {RESULT_DIR} && mount -t tmpfs -o size=1m,mode=0700,uid={uid},gid={uid} harness-abuser {RESULT_DIR}",
        f"{{ snapshot {_mnt(AbuserFiles.BEFORE)}; true; }}",   # its greps fail on absent files
        f"{{ sh -c {q(join)} > {_mnt(AbuserFiles.STDERR)} 2>&1 & echo $! > {PID_FILE}; }}",
        "sleep 1",                                    # its threads are up and marked before the loop
        f"kill -0 $(cat {PID_FILE})",
    ]


def teardown() -> list[str]:
    """Lines run after the loop: stop the abuser, then read its cgroup's charge and the platform.
    A guard or window is charged when it ends (a guard at its task's wakeup), so one read while
    the abuser still ran missed the guards in flight, whose POLL time the platform had already
    counted (up to a guard per thread: 37-40 ms in runs of 120 ms charged). Stopped first, every
    thread wakes from its last sleep, which charges its last guard, and exits."""
    stat = f"{{ cat {PARENT}/abuser/cpu.agent.stat {PARENT}/abuser/cpu.agent.budget; }}"
    return [
        f"kill -TERM $(cat {PID_FILE}); wait $(cat {PID_FILE})",
        f"{{ snapshot {_mnt(AbuserFiles.AFTER)}; true; }}",
        f"{stat} > {_mnt(AbuserFiles.STAT)} 2>&1",
        f"{{ cat {PARENT}/agent/cpu.agent.stat; }} > {_mnt(AbuserFiles.AGENT_STAT)} 2>&1",
        f"cp {RESULT_TMP} {_mnt(AbuserFiles.RESULT)}",
        f"echo 1 > {POLICY}",
    ]


_STAT_LINE = re.compile(r"([a-z_]{1,32}) ([0-9]{1,20})")
_BUDGET_LINE = re.compile(r"(max|[0-9]{1,20}) [0-9]{1,20}")


def _stat(text: str) -> tuple[dict[str, int], str]:
    stat, budget = {}, ""
    for line in text.splitlines()[:64]:
        if m := _STAT_LINE.fullmatch(line.strip()):
            stat[m[1]] = int(m[2])
        elif _BUDGET_LINE.fullmatch(line.strip()):
            budget = line.strip()
    return stat, budget


def _pinned(own: dict, spec: AbuserSpec | None) -> int | None:
    """The CPU the spec pinned the abuser to, if the abuser says so too (it writes -1 when not
    pinned). The guest's word alone picks no CPU's table: it must be the spec's, as an int."""
    cpu, want = own.get("cpu"), (spec.cpu if spec is not None else None)
    if type(cpu) is not int or cpu != (-1 if want is None else want):
        raise ValueError(f"{AbuserFiles.RESULT}: cpu {share.excerpt(repr(cpu), 40)}, but the spec "
                         f"{'pins it to ' + str(want) if want is not None else 'does not pin it (-1)'}")
    return want


def read(share_dir: Path, spec: AbuserSpec | None = None) -> AbuserResult:
    """The abuser's files from the share (bounded, no links); ValueError if they are not there or
    not what the abuser writes for `spec` (None: an unpinned abuser)."""
    text = share.read_text_or_none(share_dir / AbuserFiles.RESULT, share.LIMIT_SMALL)
    if text is None:
        err = share.read_text_or_none(share_dir / AbuserFiles.STDERR, share.LIMIT_SMALL) or ""
        raise ValueError(f"the abuser left no {AbuserFiles.RESULT}: {share.excerpt(err.strip(), 300)}")
    try:
        own = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{AbuserFiles.RESULT}: not JSON ({e})") from None
    stat, budget = _stat(share.read_text_or_none(share_dir / AbuserFiles.STAT, share.LIMIT_SMALL) or "")
    agent, _ = _stat(share.read_text_or_none(share_dir / AbuserFiles.AGENT_STAT, share.LIMIT_SMALL) or "")
    if not isinstance(own, dict):
        raise ValueError(f"{AbuserFiles.RESULT}: not an object")
    before, after = (platform.parse_snapshot(share.read_text(share_dir / f, share.LIMIT_SMALL), f)
                     for f in (AbuserFiles.BEFORE, AbuserFiles.AFTER))
    plat = platform.delta(before, after)
    cpu = _pinned(own, spec)
    if cpu is not None and plat.busy_freq_time_s and cpu not in plat.cpu_busy_freq_time_s:
        raise ValueError(f"the abuser is pinned to cpu{cpu}: the snapshots have busy_time_in_state, not that CPU's")
    return AbuserResult(kind=own.get("kind"), mark=own.get("mark"), marked=own.get("marked"),
                        mark_errno=own.get("mark_errno"), threads=own.get("threads"),
                        seconds=own.get("seconds"), work=own.get("work"), cpu=cpu,
                        stat=stat, budget=budget,
                        agent_stat=agent, elapsed_s=plat.elapsed_s, energy_uj=plat.energy_uj,
                        freq_time_s={str(k): v for k, v in plat.freq_time_s.items()},
                        busy_freq_time_s={str(k): v for k, v in plat.busy_freq_time_s.items()},
                        cpu_busy_freq_time_s={str(k): v for k, v in
                                              plat.cpu_busy_freq_time_s.get(cpu, {}).items()},
                        idle_time_s=dict(plat.idle_time_s))
