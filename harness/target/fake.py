"""A fake fabric Connection for the SSH backend's tests: the target's filesystem is a local
directory, SFTP is paramiko's own attribute objects over it, and `run` understands exactly the
fixed commands the backend sends (anything else is an error, so a new command shows up in the
tests). Starting the guest script "runs" it by copying a recording of a real guest's share
(tests/fixtures/guest/, the fake VM backend's) into the remote share, as a target would leave it.

Faults are scripted: the connection refused, a host-key mismatch, a failed authentication, a
connection lost after N SFTP calls (and refused or accepted on reconnecting), a run that never
ends, hostile files planted in the remote share.

Kernel deploy: /proc/sys/kernel/random/boot_id, /proc/sys/kernel/osrelease and /proc/cmdline
are files under the root; the deploy script "kexecs" (`kexec`: the kernel boots, the target falls
back to its previous kernel, it stays down, or kexec refuses the image): the next connections see
the old boot (`linger`), then none (`down_for`), then the new boot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from harness.target.inventory import Target
from harness.target.remote import FabricRemote

FACTS = {"arch": "x86_64", "kernel_release": "6.1.0-fake-amd64", "kernel_version": "#1 SMP fake", "uid": "0",
         "cpus": "2", "cpu_model": "Fake CPU @ 2.0GHz", "board": "fake board", "cpufreq_driver": "intel_pstate",
         "cpufreq_governor": "powersave", "cpuidle_driver": "intel_idle", "cpuidle_governor": "menu",
         "cpuidle_states": "POLL C1 C6 ", "rapl": " intel-rapl:0", "hwmon": "", "has_bpftrace": "1",
         "has_unshare": "1", "has_setsid": "1", "has_flock": "1"}


@dataclass
class FakeTarget:
    """The remote machine: its root directory, what it says about itself, and its faults."""

    root: Path
    recording: Path | None = None
    facts: dict[str, str] = field(default_factory=lambda: dict(FACTS))
    refuse: BaseException | None = None          # raised by open() (every connection)
    lose_after: int | None = None                # SFTP calls after the launch before the link drops
    reconnect: BaseException | None = None       # raised by open() once the link dropped (None: accepted)
    never_ends: bool = False                     # the run never writes its exit status
    launch_exit: int = 0                         # what launch.sh exits with (nonzero: nothing started)
    supervisor_died: bool = False                # the lock is free, yet no exit status is ever written
    after_launch: Callable[[Path], None] | None = None   # plants things in the remote work dir
    run_s: float = 0.0                           # how long a run takes before its exit status appears
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    lock_waits: int = 0                          # waits on a run's lock (flock) the host started
    running: int = 0                             # runs launched and not yet fetched (one at a time)
    most_running: int = 0
    exit_at: dict = field(default_factory=dict)
    calls_since_launch: int | None = None
    dropped: bool = False
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"
    kexec: str = "boots"                         # boots | falls-back | stays-down | refused | ignored
    deployed_release: str = "6.12.0-fake"        # what the kexec'd kernel says it is
    linger: int = 1                              # connections that still reach the old boot after a kexec
    down_for: int = 2                            # connections refused after that, while it boots
    dmesg: str = "Linux version 6.12.0-fake (fake)\nclocksource: tsc\n"   # each boot's log starts as this
    dmesg_after_cell: str = ""                   # what the kernel logs once a cell's run directory is removed
    pending: tuple | None = None                 # the boot a kexec or a reboot leads to (cmdline, release)
    boots: list[str] = field(default_factory=list)   # each boot's command line, the first included
    _left: list[int] = field(default_factory=lambda: [0, 0])

    def __post_init__(self) -> None:
        self.own_release = self.facts["kernel_release"]   # the target's own kernel, its boot loader's default
        self._boot(self.cmdline, self.own_release)

    def _boot(self, cmdline: str, release: str) -> None:
        import uuid
        proc = self.root / "proc"
        (proc / "sys/kernel/random").mkdir(parents=True, exist_ok=True)
        (proc / "sys/kernel/random/boot_id").write_text(f"{uuid.uuid4()}\n")
        (proc / "sys/kernel/osrelease").write_text(release + "\n")
        (proc / "cmdline").write_text(cmdline + "\n")
        self.facts["kernel_release"] = release
        self.boots.append(cmdline)
        self.log = self.dmesg

    def reboot_into(self, cmdline: str, release: str) -> None:
        self.pending = (cmdline, release)
        self._left = [self.linger, 10 ** 9 if self.kexec == "stays-down" else self.down_for]

    def opening(self) -> None:
        """A connection attempt while a reboot is under way: the old boot, then none, then the new."""
        if self.pending is None:
            return
        if self._left[0] > 0:
            self._left[0] -= 1
            return
        if self._left[1] > 0:
            self._left[1] -= 1
            raise refused()
        cmdline, release = self.pending
        self.pending = None
        self._boot(cmdline, release)

    def path(self, remote: str) -> Path:
        if not remote.startswith("/"):
            raise ValueError(f"the backend used a relative remote path: {remote!r}")
        return self.root / remote.lstrip("/")

    def connection(self, target: Target) -> FabricRemote:
        """What SshBackend(connect=...) takes: the real FabricRemote over a FakeConnection."""
        return FabricRemote(target, connection=FakeConnection(self))

    def tick(self) -> None:
        if self.calls_since_launch is None:
            return
        self.calls_since_launch += 1
        if self.lose_after is not None and self.calls_since_launch > self.lose_after and not self.dropped:
            self.dropped = True
        if self.dropped:
            raise EOFError("the remote end closed the connection")


class FakeResult:
    def __init__(self, exited: int):
        self.exited = exited


class FakePromise:
    """fabric's Promise for an asynchronous run of the lock wait: `runner.process_is_finished`
    turns true when the lock is free (exit 0) or flock's own timeout passes (exit 1)."""

    def __init__(self, free_at: float, gives_up_at: float):
        self.free_at, self.gives_up_at = free_at, gives_up_at
        self.runner = self
        self.killed = False

    @property
    def process_is_finished(self) -> bool:
        return self.killed or time.monotonic() >= min(self.free_at, self.gives_up_at)

    def kill(self) -> None:
        self.killed = True

    def join(self) -> FakeResult:
        return FakeResult(-1 if self.killed else 0 if time.monotonic() >= self.free_at else 1)


class FakeConnection:
    """fabric.Connection's interface, as FabricRemote uses it."""

    def __init__(self, t: FakeTarget):
        self.t = t
        self.ssh_config: dict = {}
        self.opened = False

    def open(self) -> None:
        t = self.t
        if t.dropped and t.reconnect is not None:
            raise t.reconnect
        if t.refuse is not None:
            raise t.refuse
        t.opening()
        if t.dropped:          # accepted again: the link is back
            t.dropped, t.lose_after = False, None
        t.connections += 1
        self.opened = True

    def sftp(self) -> FakeSftp:
        return FakeSftp(self.t)

    def close(self) -> None:
        self.opened = False

    def run(self, command: str, **kw) -> FakeResult | FakePromise:
        t = self.t
        t.tick()
        t.commands.append(command)
        words = shlex.split(command.split(" > ")[0].split(" 2>")[0])
        if words[:2] == ["sudo", "-n"]:
            words = words[2:]
        if words[:3] == ["flock", "-s", "-w"] and words[4].endswith("/running") and words[5:] == ["true"]:
            # a wait on the run's lock: free once the run's exit status is due, else after the timeout
            assert kw.get("asynchronous"), "the lock is waited on asynchronously (the host's stop ends it)"
            free_at = (time.monotonic() if t.supervisor_died else
                       t.exit_at.get(str(t.path(words[4]).with_name("exit")), float("inf")))
            t.lock_waits += 1
            return FakePromise(free_at, time.monotonic() + float(words[3]))
        assert not kw.get("asynchronous"), f"only the lock is waited on asynchronously, not {command!r}"
        if words[:4] == ["mkdir", "-p", "-m", "0700"]:
            for w in words[4:]:
                t.path(w).mkdir(parents=True, exist_ok=True)
            return FakeResult(0)
        if words[0] == "sh" and words[1].endswith("/facts.sh"):
            out = command.split(" > ")[1].split(" ")[0]
            t.path(shlex.split(out)[0]).write_text("".join(f"{k}={v}\n" for k, v in t.facts.items()))
            return FakeResult(0)
        if words[0] == "sh" and words[1].endswith("/launch.sh"):
            if t.launch_exit:
                return FakeResult(t.launch_exit)
            self._launch(t.path(words[2]))
            return FakeResult(0)
        if words[:3] == ["rm", "-rf", "--"]:
            shutil.rmtree(t.path(words[3]), ignore_errors=True)
            if "/c-" in words[3]:   # a cell's run directory (k-: a deploy's)
                t.running -= 1
                t.log += t.dmesg_after_cell
            return FakeResult(0)
        if words[:3] == ["kill", "-TERM", "--"]:
            return FakeResult(0)
        if words == ["test", "$(id -u)", "=", "0"]:
            return FakeResult(0 if t.facts.get("uid") == "0" else 1)
        if words[0] == "sh" and words[1].endswith("/deploy.sh"):
            work = t.path(words[2])
            assert (work / "kernel").is_file() and (work / "cmdline").is_file()
            if t.kexec == "refused":
                (work / "deploy.err").write_text("kexec_load failed: Invalid argument\n")
                (work / "kernel").unlink()
                return FakeResult(4)
            (work / "kernel").unlink()
            new = (work / "cmdline").read_text().strip()
            if t.kexec == "ignored":   # systemd took the job and never ran it: the old boot stays up
                return FakeResult(0)
            if t.kexec == "falls-back":
                t.reboot_into(t.boots[0], t.own_release)
            else:
                t.reboot_into(new, t.deployed_release)
            return FakeResult(0)
        if words[0] == "sh" and words[1].endswith("/restore.sh"):
            t.reboot_into(t.boots[0], t.own_release)
            return FakeResult(0)
        if words[0] == "dmesg":
            out = command.split(" > ")[1].split(" ")[0]
            t.path(shlex.split(out)[0]).write_text(t.log)
            return FakeResult(0)
        raise AssertionError(f"the fake target does not know this command: {command!r}")

    def _launch(self, work: Path) -> None:
        t = self.t
        share = work / "share"
        if t.recording is not None:
            for f in t.recording.iterdir():
                if f.is_file() and f.name not in ("recording.json", "console.log", "guest.sh"):
                    shutil.copyfile(f, share / f.name)
            (work / "console.log").write_text("the guest script ran (fake target)\n")
        (work / "pid").write_text("4242\n")
        if t.facts.get("has_flock") == "1":   # launch.sh took the run's lock
            (work / "locked").write_text("")
        t.running += 1
        t.most_running = max(t.most_running, t.running)
        if not t.never_ends:
            t.exit_at[str(work / "exit")] = time.monotonic() + t.run_s
        elif t.recording is not None:   # a run that hangs in the loop: its status stops at the start
            from harness.guest import protocol
            keep = [line for line in (share / protocol.STATUS).read_text().splitlines()
                    if line.split("=", 1)[0] in (protocol.Key.GUEST_UP, protocol.Key.KERNEL,
                                                 protocol.Key.WORKLOAD_CMD, protocol.Key.WORKLOAD_START)]
            (share / protocol.STATUS).write_text("\n".join(keep) + "\n")
        if t.after_launch is not None:
            t.after_launch(work)
        t.calls_since_launch = 0


class FakeSftp:
    """paramiko.SFTPClient's calls FabricRemote makes, on the fake target's directory."""

    def __init__(self, t: FakeTarget):
        self.t = t

    def lstat(self, remote: str) -> paramiko.SFTPAttributes:
        self.t.tick()
        p = self.t.path(remote)
        if str(p) in self.t.exit_at and not p.exists() and time.monotonic() >= self.t.exit_at[str(p)]:
            p.write_text("0\n")   # the run ended
        return paramiko.SFTPAttributes.from_stat(os.lstat(self.t.path(remote)))

    def open(self, remote: str, mode: str):
        self.t.tick()
        return open(self.t.path(remote), mode)

    def put(self, local: str, remote: str) -> None:
        self.t.tick()
        shutil.copyfile(local, self.t.path(remote))

    def chmod(self, remote: str, mode: int) -> None:
        os.chmod(self.t.path(remote), mode)

    def listdir_attr(self, remote: str) -> list[paramiko.SFTPAttributes]:
        self.t.tick()
        d = self.t.path(remote)
        return [paramiko.SFTPAttributes.from_stat(os.lstat(d / n), n) for n in sorted(os.listdir(d))]

    def close(self) -> None:
        pass


def refused() -> BaseException:
    return ConnectionRefusedError(111, "Connection refused")


def bad_host_key() -> BaseException:
    k1, k2 = _key(), _key()
    return paramiko.BadHostKeyException("[127.0.0.1]:2222", k1, k2)


def _key() -> paramiko.PKey:
    """A throwaway key object (RSA: paramiko can generate it without files)."""
    return paramiko.RSAKey.generate(1024)


def auth_failed() -> BaseException:
    return paramiko.AuthenticationException("Authentication failed.")


def timed_out() -> BaseException:
    return TimeoutError("timed out")


def no_banner() -> BaseException:
    """What a forwarded port with no sshd behind it gives (QEMU's user network accepts, then resets)."""
    return paramiko.SSHException("Error reading SSH protocol banner[Errno 104] Connection reset by peer")
