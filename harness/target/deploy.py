"""Kernel deploy on a remote target (`deploy: kexec` in the inventory): boot the cell's kernel with
kexec, see the target come back on it, and boot the target's own kernel again after the run.

How a boot is recognised: the kernel's boot id (/proc/sys/kernel/random/boot_id) is new at every
boot, kexec included, and the deployed kernel's command line carries a marker,
`harness.deploy=<digest of the build key and the cell's parameters>`. After the kexec the host
reconnects until the boot id changes: the marker there means the cell's kernel runs (its release
is checked against the build's); a new boot without it means the cell's kernel did not boot and
the target's fallback brought its previous kernel back (a `panic=` reboot, or a hardware watchdog
armed across the kexec: systemd's KExecWatchdogSec); no answer within `deploy_timeout_s` means
the target is down, and its cells fail with that reason until it answers again.

Everything runs as fixed scripts whose only argument is a directory the harness made; the kernel's
command line goes to the target as a file of validated tokens, read by the script inside a quoted
command substitution (never split, never expanded). The state is read over SFTP from /proc,
bounded, and only compared, never executed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import procs
from harness.guest import share
from harness.target.inventory import Target
from harness.target.remote import Remote, RemoteError, q

MARKER = "harness.deploy="
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STATE_LIMIT = 4096
ERR_LIMIT = 4096

# deploy.sh W: load W/kernel with the command line in W/cmdline, then queue the reboot into it
# (systemd's kexec job stops the services and arms its kexec watchdog; without systemd, kexec -e
# once this command has returned). Exit 3: no kexec-tools; 4: kexec refused the kernel; 5: systemd
# refused the kexec (their words in W/deploy.err).
DEPLOY_SH = """W="$1"
case "$W" in /*) ;; *) exit 2;; esac
command -v kexec >/dev/null 2>&1 || { echo "kexec not found (install kexec-tools)" > "$W/deploy.err"; exit 3; }
kexec -l "$W/kernel" --command-line="$(cat "$W/cmdline")" > "$W/deploy.err" 2>&1 || { rm -f "$W/kernel"; exit 4; }
rm -f "$W/kernel"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl --no-block kexec > "$W/deploy.err" 2>&1 || { kexec -u; exit 5; }
else
	setsid sh -c 'sleep 2; sync; kexec -e' </dev/null >/dev/null 2>&1 &
fi
exit 0
"""
# restore.sh W: reboot into the target's own kernel (its boot loader's default) once this returns.
RESTORE_SH = """W="$1"
case "$W" in /*) ;; *) exit 2;; esac
kexec -u >/dev/null 2>&1
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl --no-block reboot || exit 5
else
	setsid sh -c 'sleep 2; sync; reboot -f' </dev/null >/dev/null 2>&1 &
fi
exit 0
"""


@dataclass(frozen=True)
class Kernel:
    """A cell's kernel as the target is to run it."""

    image: Path
    key: str
    release: str | None
    cmdline: tuple[str, ...] = ()   # the cell's own parameters (machine.cmdline, the platform's)


def marker(target: Target, kernel: Kernel) -> str:
    """Names the build and the whole command line before it (the target's and the cell's)."""
    words = (kernel.key, *target.entry.cmdline, *kernel.cmdline)
    return MARKER + hashlib.sha256("\0".join(words).encode()).hexdigest()[:16]


def boot_cmdline(target: Target, kernel: Kernel) -> list[str]:
    """The deployed kernel's whole command line: the target's, the cell's, the marker."""
    return [*target.entry.cmdline, *kernel.cmdline, marker(target, kernel)]


@dataclass(frozen=True)
class State:
    """What the target says of its running kernel."""

    boot_id: str
    release: str
    cmdline: tuple[str, ...]

    @property
    def deployed(self) -> bool:
        return any(t.startswith(MARKER) for t in self.cmdline)


def read_state(remote: Remote) -> State:
    def text(path: str) -> str:
        data = remote.read(path, STATE_LIMIT)
        if data is None:
            raise RemoteError("target-unusable", f"{path} is missing on the target")
        return data.decode("utf-8", errors="replace").strip()
    boot_id = text("/proc/sys/kernel/random/boot_id")
    if not _BOOT_ID.fullmatch(boot_id):
        raise RemoteError("target-unusable", f"the target's boot id is not a UUID ({share.excerpt(boot_id, 60)!r})")
    return State(boot_id, share.excerpt(text("/proc/sys/kernel/osrelease"), 120),
                 tuple(text("/proc/cmdline").split()[:256]))


class Deployer:
    """Kernel deploy for one target; `connect` opens a Remote (a fake in the tests)."""

    def __init__(self, target: Target, connect: Callable[[Target], Remote], poll_s: float = 5.0):
        self.t = target
        self.connect = connect
        self.poll_s = poll_s
        self.deployed = False      # a kernel of ours ran on the target in this run (restore it after)
        self.suspect = False       # the last cell on that kernel did not end ok: boot it afresh

    def _sudo(self, remote: Remote) -> tuple[str, ...]:
        return () if remote.run('test "$(id -u)" = 0', self.t.entry.connect_timeout_s) == 0 else ("sudo", "-n")

    def _stage(self, remote: Remote, script: str, name: str) -> str:
        """A fresh directory on the target holding `script` as `name`; its path."""
        work = f"{self.t.entry.workdir}/k-{secrets.token_hex(8)}"
        if remote.run(q("mkdir", "-p", "-m", "0700", work), self.t.entry.connect_timeout_s) != 0:
            raise RemoteError("deploy-failed", f"cannot make {work} on the target")
        _put_text(remote, f"{work}/{name}", script)
        return work

    def ensure(self, remote: Remote, kernel: Kernel, say: Callable[[str], None] = lambda _text: None,
               ) -> tuple[Remote, float | None]:
        """The target runs `kernel` with the cell's command line when this returns: the connection
        to use and the seconds the deploy took (None: it ran already). RemoteError otherwise.
        `say` takes the progress lines (the cell's console log)."""
        e = self.t.entry
        want = marker(self.t, kernel)
        before = read_state(remote)
        self.deployed = self.deployed or before.deployed   # an earlier run's kernel is restored too
        running = want in before.cmdline and (kernel.release is None or before.release == kernel.release)
        if running and not self.suspect:
            say(f"the target runs the cell's kernel already ({before.release}, {want})")
            return remote, None
        if running:
            say("the target runs the cell's kernel, but its last cell there did not end ok: booting it afresh")
        sudo = self._sudo(remote)
        work = self._stage(remote, DEPLOY_SH, "deploy.sh")
        _put_text(remote, f"{work}/cmdline", " ".join(boot_cmdline(self.t, kernel)) + "\n")
        remote.put(kernel.image, f"{work}/kernel", 0o600)
        t0 = time.monotonic()
        rc = _reboot_script(remote, sudo, work, "deploy.sh")
        if rc != 0:
            said = share.excerpt((remote.read(f"{work}/deploy.err", ERR_LIMIT, tail=True) or b"").decode(
                "utf-8", errors="replace"), 300)
            remote.run(q(*sudo, "rm", "-rf", "--", work), e.connect_timeout_s)
            what = "refused to reboot into" if rc == 5 else "refused"
            raise RemoteError("deploy-failed", f"kexec on {self.t.name} {what} the cell's kernel {kernel.key} "
                              f"(exit {rc}): {said or 'no message'}")
        self.deployed, self.suspect = True, False
        say(f"kexec into {kernel.release or kernel.key} ({want}) started on {before.release}; "
                 f"waiting up to {e.deploy_timeout_s} s for the target to come back")
        remote.close()
        remote, after = self._next_boot(before, t0, f"kexec into the cell's kernel {kernel.key}")
        took = time.monotonic() - t0
        try:
            remote.run(q(*sudo, "rm", "-rf", "--", work), e.connect_timeout_s)   # on disk: it outlived the kexec
            if want not in after.cmdline:
                raise RemoteError("deploy-failed", f"{self.t.name} came back after {took:.0f} s on {after.release} "
                                  f"without the cell's kernel {kernel.key}: that kernel did not boot, and the "
                                  "target's fallback (a panic= reboot or a watchdog) brought its previous kernel "
                                  "back; the failed boot's console is on the target's serial line, not here")
            if kernel.release and after.release != kernel.release:
                raise RemoteError("deploy-failed", f"{self.t.name} runs {after.release} with the deploy marker, the "
                                  f"build {kernel.key} is {kernel.release}")
        except BaseException:
            remote.close()
            raise
        say(f"the target runs {after.release} (boot {after.boot_id[:8]}), {took:.0f} s after the kexec")
        return remote, took

    def restore(self) -> str:
        """Boot the target's own kernel again (the inventory's `restore: reboot`); what happened."""
        e = self.t.entry
        try:
            remote = self.connect(self.t)
        except RemoteError as err:
            return f"{self.t.name}: not restored: {err.reason}"
        try:
            before = read_state(remote)
            if not before.deployed:
                return f"{self.t.name}: runs its own kernel {before.release}"
            sudo = self._sudo(remote)
            work = self._stage(remote, RESTORE_SH, "restore.sh")
            t0 = time.monotonic()
            if _reboot_script(remote, sudo, work, "restore.sh") != 0:
                return f"{self.t.name}: not restored: the reboot was refused (root or sudo -n needed)"
            remote.close()
            remote, after = self._next_boot(before, t0, "the reboot into its own kernel")
            remote.run(q(*sudo, "rm", "-rf", "--", work), e.connect_timeout_s)
        except RemoteError as err:
            return f"{self.t.name}: not restored: {err.reason}"
        finally:
            remote.close()
        took = time.monotonic() - t0
        if after.deployed:
            return f"{self.t.name}: rebooted, but on a harness kernel again ({after.release}): check its boot loader"
        return f"{self.t.name}: back on its own kernel {after.release} after {took:.0f} s"

    def _next_boot(self, before: State, t0: float, what: str) -> tuple[Remote, State]:
        """Reconnect until the target answers from a boot other than `before`'s."""
        deadline = t0 + self.t.entry.deploy_timeout_s
        last, old_boot = "no answer", False
        while time.monotonic() < deadline:
            time.sleep(self.poll_s)
            if (sig := procs.terminating()) is not None:   # the harness is stopping: so does the wait
                raise procs.Terminated(sig)
            try:
                remote = self.connect(self.t)
            except RemoteError as err:
                if err.kind in ("host-key", "auth"):   # no reboot explains these: stop here
                    raise
                last, old_boot = err.reason, False
                continue
            try:
                st = read_state(remote)
            except RemoteError as err:
                remote.close()
                last = err.reason
                continue
            if st.boot_id != before.boot_id:
                return remote, st
            remote.close()             # the old kernel, on its way down
            last, old_boot = "still on the kernel it ran before", True
            continue
        if old_boot and last.startswith("still"):   # up all along: the reboot never happened
            raise RemoteError("deploy-failed", f"{self.t.name} still runs the boot it ran before "
                              f"{self.t.entry.deploy_timeout_s} s after {what} was started: the reboot did not "
                              "happen (a systemd inhibitor, or kexec -e refused)")
        raise RemoteError("target-down", f"{self.t.name} did not come back within {self.t.entry.deploy_timeout_s} s "
                          f"of {what} (last: {share.excerpt(last, 160)}), nor did its fallback bring it back: its "
                          "cells fail until it answers again")


def _reboot_script(remote: Remote, sudo: tuple[str, ...], work: str, name: str) -> int:
    """Run a script that queues a reboot; the link going down before its exit status came back
    is the reboot under way (exit 0)."""
    try:
        return remote.run(q(*sudo, "sh", f"{work}/{name}", work) + " > /dev/null 2>&1", 120)
    except RemoteError as err:
        if err.kind != "target-lost":
            raise
        return 0


def _put_text(remote: Remote, path: str, text: str) -> None:
    try:
        with tempfile.NamedTemporaryFile("w", prefix="harness-deploy-", suffix=".txt") as fh:
            fh.write(text)
            fh.flush()
            remote.put(Path(fh.name), path, 0o600)
    except OSError as e:   # the host's side (a full /tmp): the cell's failure, not the run's
        raise RemoteError("deploy-failed", f"cannot stage {Path(path).name} for the target: {e}") from None
