"""The SSH backend: a cell's guest script run on a remote machine instead of a VM, behind the
same interface as virtme-ng (harness/guest/backend.py), so the runner's collect and record
stages see a share exactly as a VM leaves it.

Per attempt, on the target, in `<workdir>/<random token>/`: the share's inputs (the guest
script, probe scripts, wait times) under `share/`, the workload binary under `tools/`, and three
fixed launcher scripts. The guest script runs detached (setsid) in a private mount namespace where
`share/` is bound at /mnt and `tools/` read-only at /opt, so it is byte for byte the script a VM
runs and nothing of it shows outside the namespace. The run holds a lock (flock) until its exit
status is written; in between looks at the status file (mirrored into the local share, so
progress is shown as for a VM) the host waits on that lock, so the target does no work for the
host while the loop runs and the run's end is seen at once. A target without util-linux's flock
is polled instead. A lost connection is retried for `reconnect_s` while the run goes on; at the
end the share's regular files are fetched within the share's size caps, then the directory is
removed.

Nothing the target says reaches a shell: commands are fixed texts whose only arguments are the
work directory (checked against a plain pattern, then quoted) and a pid read as digits.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.errors import HarnessError
from harness.guest import protocol, share
from harness.guest.accel import AccelChoice
from harness.guest.vm import CONSOLE_TAIL, GuestConfig, GuestResult, classify
from harness.kernel.cache import BuildCache
from harness.spec.model import SAFE_PATH
from harness.target import energy
from harness.target.deploy import Deployer, Kernel
from harness.target.inventory import Target
from harness.target.remote import FabricRemote, Remote, RemoteError, q, safe_name
from harness.workload.build import workload_dir

UNAME_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
# How often a target without flock is polled for the run's end (each poll is an SFTP round trip
# that the target's sshd serves).
UNLOCKED_POLL_S = 2.0
FACTS_LIMIT = 64 << 10
# What the fetch may take of one attempt in all (the share's per-file caps apply on top).
FETCH_BUDGET = 4 << 30

# Whether the target has util-linux's flock (busybox's lacks -w): what launch.sh decides by, and a fact.
HAS_FLOCK = "flock -s -w 0.1 /dev/null true 2>/dev/null"
# Host identity, one key=value a line (protocol.parse_status reads it). Fixed text.
FACTS_SH = r"""C=/sys/devices/system/cpu
echo "arch=$(uname -m)"
echo "kernel_release=$(uname -r)"
echo "kernel_version=$(uname -v)"
echo "uid=$(id -u)"
echo "cpus=$(nproc)"
echo "cpu_model=$(grep -m1 -E '^(model name|Hardware|Model|cpu model)' /proc/cpuinfo | cut -d: -f2-)"
[ -r /proc/device-tree/model ] && echo "board=$(tr -d '\000' < /proc/device-tree/model)"
[ -r /sys/class/dmi/id/product_name ] && echo "board=$(cat /sys/class/dmi/id/product_name)"
echo "cpufreq_driver=$(cat $C/cpufreq/policy0/scaling_driver 2>/dev/null || echo none)"
echo "cpufreq_governor=$(cat $C/cpufreq/policy0/scaling_governor 2>/dev/null || echo none)"
echo "cpuidle_driver=$(cat $C/cpuidle/current_driver 2>/dev/null || echo none)"
echo "cpuidle_governor=$(cat $C/cpuidle/current_governor 2>/dev/null || cat $C/cpuidle/current_governor_ro 2>/dev/null || echo none)"
echo "cpuidle_states=$(cat $C/cpu0/cpuidle/state*/name 2>/dev/null | tr '\n' ' ')"
r=""; for z in /sys/class/powercap/*; do [ -r "$z/energy_uj" ] && r="$r ${z##*/}"; done; echo "rapl=$r"
h=""; for d in /sys/class/hwmon/hwmon*; do ls "$d" 2>/dev/null | grep -qE '^(power|energy)[0-9]+_input$' && h="$h ${d##*/}:$(cat "$d/name" 2>/dev/null)"; done; echo "hwmon=$h"
for t in bpftrace unshare setsid; do command -v $t >/dev/null 2>&1 && echo "has_$t=1"; done
""" + f'{HAS_FLOCK} && echo "has_flock=1"\n'  # noqa: E501
# launch.sh W: start supervise.sh in a session of its own (it outlives the SSH connection),
# holding W/running locked (fd 9, taken before this returns, so the host's first wait finds it
# held; util-linux's flock, where there is one).
LAUNCH_SH = """W="$1"
case "$W" in /*) ;; *) exit 2;; esac
exec 9> "$W/running" || exit 3
chmod 644 "$W/running"
if """ + HAS_FLOCK + """; then flock -n 9 && : > "$W/locked" || exit 3; fi
setsid sh "$W/supervise.sh" "$W" </dev/null >/dev/null 2>&1 &
"""
# supervise.sh W: the run (without the lock's descriptor: a process it leaves behind does not hold
# it), its exit status written last (atomically: `exit` is what the host reads), then the lock
# goes with this shell.
SUPERVISE_SH = """W="$1"
echo $$ > "$W/pid"
unshare --mount --propagation private sh "$W/ns.sh" "$W" > "$W/console.log" 2>&1 </dev/null 9>&-
echo $? > "$W/exit.tmp" && mv "$W/exit.tmp" "$W/exit"
"""
# ns.sh W, in the private mount namespace: the root cgroup where cgroup v2 lets root move there (a
# VM's script runs there; a login session's scope nests the loop's utilisation under task groups),
# the VM's paths, then the guest script itself.
NS_SH = """W="$1"
[ -w /sys/fs/cgroup/cgroup.procs ] && echo $$ > /sys/fs/cgroup/cgroup.procs 2>/dev/null
echo "harness: the run's cgroup: $(cat /proc/self/cgroup)"
mount --bind "$W/share" /mnt || { echo "harness: cannot bind the share at /mnt"; exit 120; }
mount --bind "$W/tools" /opt && mount -o remount,bind,ro /opt || { echo "harness: cannot bind the tools at /opt"; exit 121; }
cd /
exec sh /mnt/guest.sh
"""  # noqa: E501
_SCRIPTS = {"facts.sh": FACTS_SH, "launch.sh": LAUNCH_SH, "supervise.sh": SUPERVISE_SH, "ns.sh": NS_SH}
_PID = re.compile(r"[0-9]{1,9}")
_EXIT = re.compile(r"-?[0-9]{1,5}")


def file_limit(name: str) -> int:
    """The share's cap for a file of the protocol's naming."""
    if name == protocol.STATUS:
        return share.LIMIT_STATUS
    if name.startswith("steps-"):
        return share.LIMIT_STEPS
    if name.startswith("probe-") and name.endswith(".json"):
        return share.LIMIT_PROBE
    return share.LIMIT_SMALL


@dataclass
class _Log:
    """The cell's console log: the harness's own lines about the remote run, then the script's output."""

    path: Path
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(f"[harness {time.strftime('%H:%M:%S')}] {text}")

    def write(self, script_output: bytes = b"") -> None:
        with share.create_exclusive(self.path, "wb") as fh:
            fh.write(("\n".join(self.lines) + "\n").encode())
            if script_output:
                fh.write(b"--- the guest script's output on the target ---\n")
                fh.write(script_output)


class SshBackend:
    """Cells on one remote target over SSH (fabric). `connect` makes a Remote (the tests give a fake)."""

    name = "ssh"

    def __init__(self, cache: BuildCache, target: Target, connect: Callable[[Target], Remote] | None = None,
                 poll_s: float | None = None, tools_dir: Path | None = None):
        self.cache = cache
        self.target = target
        self.connect = connect or FabricRemote
        self.poll_s = target.entry.status_poll_s if poll_s is None else poll_s   # the tests poll faster
        self.tools_dir = tools_dir      # the workload's directory (default: built for the arch, cached)
        wd = target.entry.workdir
        if not (wd.startswith("/") and SAFE_PATH.fullmatch(wd)):
            raise HarnessError(f"target {target.name}: work directory {wd!r} is not a plain absolute path")
        # A rebooting target is measuring nothing: look for it every few seconds, whatever the poll.
        self.deployer = Deployer(target, self.connect, poll_s=min(max(self.poll_s, 0.01) * 2.5, 5.0))
        self._one_at_a_time = threading.Lock()   # a target in two fleets: one cell (and one kernel) at a time

    def finish(self) -> str | None:
        """After the run: the target's own kernel again, if a cell's was deployed (what happened)."""
        if not self.deployer.deployed or self.target.entry.restore == "none":
            return None
        return self.deployer.restore()

    # -- the GuestBackend interface -------------------------------------------------------------
    def host_facts(self, arch: str) -> dict[str, str]:
        return {"target": self.target.name, "url": self.target.address.url}

    def accel(self, requested: str, arch: str, image: Path) -> AccelChoice:
        if self.target.entry.clock == "virtual":
            return AccelChoice("none", f"remote target {self.target.name}: a QEMU guest under -icount (its "
                               "inventory entry says clock: virtual)")
        return AccelChoice("none", f"real hardware: remote target {self.target.name}")

    def rootfs(self, arch: str) -> Path | None:
        return None

    def tools(self, arch: str) -> Path:
        return self.tools_dir or workload_dir(self.cache, arch)

    @contextlib.contextmanager
    def scratch(self, size_mb: int) -> Iterator[Path]:
        raise HarnessError("a scratch disk (workload.phases.disk_mb) is not supported on a remote target")
        yield Path()  # pragma: no cover

    def run(self, cfg: GuestConfig, share_dir: Path, command: str, timeout_s: float, console: Path,
            boot_timeout_s: float | None) -> GuestResult:
        t0 = time.monotonic()
        log = _Log(console)
        work = f"{self.target.entry.workdir}/c-{secrets.token_hex(8)}"
        with self._one_at_a_time:
            run = _RemoteRun(self, cfg, share_dir, work, log)
            try:
                res = run.go(timeout_s, boot_timeout_s if boot_timeout_s is not None else timeout_s, t0)
            finally:
                run.close()
            if cfg.build_key is not None and not res.ok:   # whatever it left behind is not the next cell's
                self.deployer.suspect = True
            return res


class _RemoteRun:
    """One attempt on the target, from connecting to cleaning up."""

    def __init__(self, backend: SshBackend, cfg: GuestConfig, share_dir: Path, work: str, log: _Log):
        self.b, self.cfg, self.share_dir, self.work, self.log = backend, cfg, share_dir, work, log
        self.t = backend.target
        self.remote: Remote | None = None
        self.facts: dict[str, str] = {}
        self.sudo: tuple[str, ...] = ()
        self.status: dict[str, str] = {}
        self.launched = False
        self.lost = False
        self.locked = False          # launch.sh took the run's lock (util-linux flock on the target)
        self.lock_wait = None        # the flock the host waits on (a Job), once the run is launched
        self.lock_done = False       # that flock has ended: the target is polled from then on
        self.deploy_note = ""
        self.command = ("ssh", self.t.address.url, f"sh {work}/launch.sh {work}")

    def close(self) -> None:
        self._drop_lock_wait()
        if self.remote is not None:
            self.remote.close()

    def _result(self, outcome: str, reason: str, t0: float, rc=None, boot_wall=None, script_output=b"",
                timed_out=False) -> GuestResult:
        self.log.say(f"{outcome}: {reason}")
        self.log.write(script_output)
        return GuestResult(outcome, reason, self.log.path, time.monotonic() - t0, rc,
                           protocol.Key.WORKLOAD_START in self.status,
                           protocol.uptime_at(self.status, protocol.Key.WORKLOAD_START), self.status, boot_wall,
                           self.command, facts=dict(self.facts))

    # -- the steps ---------------------------------------------------------------------------------
    def go(self, timeout_s: float, boot_limit: float, t0: float) -> GuestResult:
        e = self.t.entry
        self.log.say(f"connecting to {self.t.name} ({self.t.address.url})")
        t_run = t0
        try:
            self.remote = self.b.connect(self.t)
            if self.cfg.build_key is not None:
                self._deploy()
                t_run = time.monotonic()   # the run's own limits count from the deployed kernel's start
            self._prepare()
        except RemoteError as err:
            return self._result(err.kind, err.reason, t0)
        except HarnessError as err:
            return self._result("target-unusable", str(err), t0)
        try:
            rc = self.remote.run(q(*self.sudo, "sh", f"{self.work}/launch.sh", self.work) + " > /dev/null 2>&1",
                                 e.connect_timeout_s)
            if rc != 0:
                return self._result("target-failed", f"the launcher on the target refused to start the run (exit "
                                    f"{rc}: its work directory or lock could not be set up)", t0)
            self.launched = True
            self.locked = self.remote.read(f"{self.work}/locked", 16) is not None   # launch.sh took the lock
            self.log.say(f"started the guest script in {self.work}; " + (
                f"waiting on its lock (flock), a look at its status every {self.b.poll_s:g} s"
                if self.locked else
                f"no flock on the target: polling it every {min(self.b.poll_s, UNLOCKED_POLL_S):g} s"))
        except RemoteError as err:
            return self._result(err.kind, f"{err.reason} (while starting the run)", t0)
        try:
            rc, timed_out, boot_wall, why = self._wait(timeout_s, boot_limit, t_run)
        except KeyboardInterrupt:   # the harness stops (a signal in the main thread): so does the run
            self._drop_lock_wait()
            self._kill()
            raise
        if why is not None:   # the connection is gone and stayed gone (or the status is not readable)
            return self._result(why.kind, why.reason, t0, boot_wall=boot_wall)
        if timed_out:
            self._kill()
        try:
            script_output = self._fetch()
            if self.cfg.build_key is not None:   # the harness's kernel: its log is the cell's, as a VM's console
                script_output += self._kernel_log()
            if not timed_out:
                self.remote.run(q(*self.sudo, "rm", "-rf", "--", self.work), e.connect_timeout_s)
        except RemoteError as err:
            return self._result("target-lost", f"{err.reason} (while fetching the results; they stay in "
                                f"{self.work} on the target)", t0, boot_wall=boot_wall)
        self.status = protocol.read_status(self.share_dir)
        text = script_output.decode("utf-8", errors="replace")
        outcome, reason = classify(rc, timed_out, text, self.status)
        if outcome == "boot-failed":
            outcome, reason = "target-failed", reason.replace("guest exited (vng exit", "the script on the target "
                                                              "exited (exit")
        return self._result(outcome, reason, t0, rc, boot_wall, script_output[-CONSOLE_TAIL:], timed_out)

    def _deploy(self) -> None:
        c = self.cfg
        self.remote, took = self.b.deployer.ensure(self.remote, Kernel(c.image, c.build_key, c.release, c.cmdline),
                                                   say=self.log.say)
        self.deploy_note = "already running" if took is None else f"kexec, back after {took:.0f} s"

    def _prepare(self) -> None:
        r = self.remote
        if r.run(q("mkdir", "-p", "-m", "0700", f"{self.work}/share/{protocol.PROBES_DIR}", f"{self.work}/tools"),
                 self.t.entry.connect_timeout_s) != 0:
            raise HarnessError(f"cannot make {self.work} on the target")
        staging = self.share_dir.parent / "target-scripts"
        staging.mkdir(exist_ok=True)
        for name, text in _SCRIPTS.items():
            local = staging / name
            local.write_text(text)
            r.put(local, f"{self.work}/{name}", 0o700)
        r.run(f"sh {q(self.work + '/facts.sh')} > {q(self.work + '/facts.txt')} 2>/dev/null", 60)
        data = r.read(f"{self.work}/facts.txt", FACTS_LIMIT) or b""
        self.facts = {k: share.excerpt(v, 200) for k, v in
                      protocol.parse_status(data.decode("utf-8", errors="replace")).items()}
        if self.deploy_note:
            self.facts["deploy"] = self.deploy_note
        self._check_facts()
        if self.cfg.build_key is not None:   # where this cell's part of the kernel log will begin
            r.run(q(*self.sudo, "dmesg") + f" > {q(self.work + '/dmesg-before.txt')} 2>/dev/null", 60)
        self.log.say("target: " + ", ".join(f"{k}={v}" for k, v in sorted(self.facts.items())))
        for local, rel in self._inputs():
            r.put(local, f"{self.work}/{rel}", 0o755 if rel.startswith("tools/") else 0o644)

    def _check_facts(self) -> None:
        f = self.facts
        want = UNAME_ARCH.get(self.cfg.arch, self.cfg.arch)
        if f.get("arch") != want:
            raise HarnessError(f"target {self.t.name} is {f.get('arch') or 'of unknown arch'!r}, the cell wants {want}")
        missing = [t for t in ("unshare", "setsid") if f.get(f"has_{t}") != "1"]
        if missing:
            raise HarnessError(f"target {self.t.name} lacks {', '.join(missing)} (util-linux)")
        if f.get("uid") != "0":
            self.sudo = ("sudo", "-n")   # passwordless sudo, or the script's first step fails
        wanted = self.t.entry.energy
        offered = [s for s in ("rapl", "hwmon") if f.get(s, "").strip()]
        f["energy_source"] = (offered[0] if offered else "none") if wanted == "auto" else (
            wanted if wanted in offered or wanted == "none" else "none")
        if wanted not in ("auto", "none") and wanted not in offered:
            f["energy_note"] = f"{wanted} asked for, not on this target"

    def _inputs(self) -> list[tuple[Path, str]]:
        """The host's inputs for this attempt: the share as the runner filled it, and the workload."""
        out = []
        for entry in sorted(os.scandir(self.share_dir), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False) and safe_name(entry.name):
                out.append((Path(entry.path), f"share/{entry.name}"))
            elif entry.is_dir(follow_symlinks=False) and entry.name == protocol.PROBES_DIR:
                out += [(Path(s.path), f"share/{protocol.PROBES_DIR}/{s.name}") for s in os.scandir(entry.path)
                        if s.is_file(follow_symlinks=False) and safe_name(s.name)]
        if self.cfg.tools_dir is None or not (self.cfg.tools_dir / "agentloop").is_file():
            raise HarnessError("no workload binary to upload")
        out.append((self.cfg.tools_dir / "agentloop", "tools/agentloop"))
        return out

    def _mirror_status(self) -> None:
        data = self.remote.read(f"{self.work}/share/{protocol.STATUS}", share.LIMIT_STATUS)
        if data is None:
            return
        tmp = self.share_dir / f".{protocol.STATUS}.mirror"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with share.create_exclusive(tmp) as fh:
            fh.write(data)
        os.replace(tmp, self.share_dir / protocol.STATUS)
        self.status = protocol.parse_status(data.decode("utf-8", errors="replace"))

    def _wait(self, timeout_s: float, boot_limit: float, t0: float):
        """Look at the run every status_poll_s (waiting on its lock in between) until its exit
        status appears, a timeout, or a connection lost for good. Returns (exit code, timed out,
        boot wall time, why the connection was lost or None)."""
        boot_wall = None
        while True:
            try:
                self._mirror_status()
                done = self.remote.read(f"{self.work}/exit", 64)
                elapsed = time.monotonic() - t0
                if boot_wall is None and protocol.Key.WORKLOAD_START in self.status:
                    boot_wall = elapsed
                if done is not None:
                    self._drop_lock_wait()
                    text = done.decode("ascii", errors="replace").strip()
                    return (int(text) if _EXIT.fullmatch(text) else None), False, boot_wall, None
                left = (boot_limit - elapsed if boot_wall is None
                        else min(timeout_s - (elapsed - boot_wall), boot_limit + timeout_s - elapsed))
                if left < 0:
                    self._drop_lock_wait()
                    return None, True, boot_wall, None
                self._pause(min(self.b.poll_s, left + 0.1), left + 1.0)
            except RemoteError as err:
                self._drop_lock_wait()   # it went with the connection, or its look failed
                if err.kind == "output-unreadable":
                    return None, False, boot_wall, RemoteError(err.kind, f"the run's status on the target cannot "
                                                               f"be read: {err.reason}")
                why = self._reconnect(err, t0, timeout_s, boot_limit)
                if why is not None:
                    return None, False, boot_wall, RemoteError("target-lost", why)

    def _pause(self, seconds: float, left: float) -> None:
        """Until the next look, `seconds` at most: a wait on the run's lock, which ends when the run
        does. One flock, started once for the whole run (`left`: its own limit), blocks on the
        target; the host watches it from its side, so the looks in between are SFTP reads only and
        the target starts no process for the host while the loop runs. Once that flock has ended
        (the run's end, or a failure of flock itself), or where launch.sh could not take the lock,
        the target is polled every UNLOCKED_POLL_S at most. The harness's stop ends the wait and
        the run."""
        if self.locked and self.lock_wait is None and not self.lock_done:
            self.lock_wait = self.remote.start(q("flock", "-s", "-w", f"{max(left, 1.0):.0f}",
                                                 f"{self.work}/running", "true") + " > /dev/null 2>&1")
        wait_s = seconds if self.lock_wait is not None else min(seconds, UNLOCKED_POLL_S)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if (sig := procs.terminating()) is not None:
                self._drop_lock_wait()
                self._kill()
                raise procs.Terminated(sig)
            if self.lock_wait is not None and self.lock_wait.finished:
                self.lock_wait.exit_status()
                self.lock_wait, self.lock_done = None, True   # never another: poll from here on
                return
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))

    def _drop_lock_wait(self) -> None:
        if self.lock_wait is not None:
            self.lock_wait.kill()
            self.lock_wait = None

    def _reconnect(self, err: RemoteError, t0: float, timeout_s: float, boot_limit: float) -> str | None:
        """Connect again for up to reconnect_s (the run goes on on the target meanwhile); the reason
        the cell fails if that does not work, else None."""
        window = self.t.entry.reconnect_s
        started = "during the workload" if protocol.Key.WORKLOAD_START in self.status else "before the workload started"
        self.log.say(f"lost the connection {started}: {err.reason}; retrying for {window} s")
        self.lost = True
        if self.remote is not None:
            self.remote.close()
            self.remote = None
        deadline = time.monotonic() + window
        last = err
        while time.monotonic() < deadline and time.monotonic() - t0 < boot_limit + timeout_s:
            time.sleep(min(self.b.poll_s * 2, 5))
            try:
                self.remote = self.b.connect(self.t)
                self.log.say("connected again")
                return None
            except RemoteError as e2:
                last = e2
        return (f"lost the SSH connection to {self.t.name} {started} and could not reconnect within {window} s "
                f"({last.reason}); what the target reported until then is kept; the run's files stay in "
                f"{self.work} on the target")

    def _kill(self) -> None:
        """Stop the run's whole process group on the target (TERM, then KILL)."""
        try:
            pid = (self.remote.read(f"{self.work}/pid", 64) or b"").decode("ascii", errors="replace").strip()
            if _PID.fullmatch(pid) and int(pid) > 1:
                self.remote.run(q(*self.sudo, "kill", "-TERM", "--", f"-{pid}") + " 2>/dev/null; sleep 2; "
                                + q(*self.sudo, "kill", "-KILL", "--", f"-{pid}") + " 2>/dev/null; true", 30)
                self.log.say(f"stopped the run's process group {pid} on the target")
        except RemoteError as err:
            self.log.say(f"could not stop the run on the target: {err.reason}")

    def _kernel_log(self) -> bytes:
        """The deployed kernel's log (dmesg) for the splat check: since its boot when this cell
        booted it, else from where it stood when this cell began (an earlier cell's complaints
        are that cell's); its end if long."""
        log = f"{self.work}/dmesg.txt"
        self.remote.run(q(*self.sudo, "dmesg") + f" > {q(log)} 2>/dev/null", 60)
        try:
            data = self.remote.read(log, CONSOLE_TAIL, tail=True) or b""
            before = (self.remote.read(f"{self.work}/dmesg-before.txt", CONSOLE_TAIL, tail=True) or b""
                      if self.deploy_note == "already running" else b"")
        except RemoteError as err:
            if err.kind != "output-unreadable":
                raise
            return f"[harness: the kernel log was not fetched: {err.reason}]\n".encode()
        last = before.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        if last and (i := data.find(last)) >= 0:
            return (b"--- the kernel's log on the target since this cell began (dmesg; an earlier cell booted "
                    b"this kernel) ---\n" + data[i + len(last):].lstrip(b"\n"))
        return b"--- the kernel's log on the target (dmesg) ---\n" + data

    def _fetch(self) -> bytes:
        """The share's regular files (bounded, plain names, not the host's own inputs), then the
        script's output (its end). What is refused is named in the console log."""
        base = f"{self.work}/share"
        budget = FETCH_BUDGET
        mine = {e.name for e in os.scandir(self.share_dir)} - {protocol.STATUS}
        for name, mode, _size in self.remote.listdir(base):
            if name in mine or stat.S_ISDIR(mode):
                continue
            if not safe_name(name):
                self.log.say(f"not fetched: a file named {share.excerpt(name, 60)!r} (not a plain name)")
                continue
            if not stat.S_ISREG(mode):
                self.log.say(f"not fetched: {name} (not a regular file)")
                continue
            limit = min(file_limit(name), budget)
            try:
                data = self.remote.read(f"{base}/{name}", limit)
            except RemoteError as err:
                if err.kind != "output-unreadable":
                    raise
                self.log.say(f"not fetched: {err.reason}")
                continue
            if data is None:
                continue
            budget -= len(data)
            dst = self.share_dir / name
            if name == protocol.STATUS:
                with contextlib.suppress(FileNotFoundError):
                    dst.unlink()
            with share.create_exclusive(dst) as fh:
                fh.write(data)
        try:
            out = self.remote.read(f"{self.work}/console.log", CONSOLE_TAIL, tail=True) or b""
        except RemoteError as err:
            if err.kind != "output-unreadable":
                raise
            out = f"[harness: the script's output was not fetched: {err.reason}]\n".encode()
        return out


def reading_for(facts: dict[str, str], before: str, after: str) -> energy.Reading:
    """The energy of one repeat from its two snapshots, from the source the facts chose."""
    return energy.between(energy.parse(before), energy.parse(after), facts.get("energy_source", "auto"))
