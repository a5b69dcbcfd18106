"""harness.procs: a child group (shaped like vng: sh -> python -> fork+exec) never outlives the
harness, whatever stops it. Each test runs a small driver (install_signal_handlers + spawn_group)
as a subprocess; every process of a test carries a unique marker (`sleep 31337.<unique>`)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from harness import paths, procs

DRIVER = r'''
import os, shlex, signal, subprocess, sys, time
from harness import procs

marker, mode = os.environ["PROCS_MARKER"], os.environ["PROCS_MODE"]
inherited = signal.getsignal(signal.SIGINT)
print("sigint inherited:", "SIG_IGN" if inherited is signal.SIG_IGN else inherited, flush=True)
procs.install_signal_handlers()
procs.REAPER_GRACE_S = 0.5


def sleeps():
    n = 0
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                n += f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]
        except OSError:
            pass
    return n


# vng's shape: sh -c -> python (virtme-run) -> fork+exec (qemu), plus a direct child of sh
forker = f"import os; os.fork() or os.execvp('sleep', ['sleep', {marker!r}]); os.wait()"
script = f"sleep {marker} & {shlex.quote(sys.executable)} -c {shlex.quote(forker)} & "
if "stubborn" in mode:
    script = "trap '' TERM; " + script          # the whole group ignores SIGTERM
script += "exit 0" if mode == "exit" else "wait"
try:
    with procs.spawn_group(["sh", "-c", script], grace=float(os.environ["PROCS_GRACE"]),
                           stdin=subprocess.DEVNULL) as p:
        while sleeps() < 2:
            time.sleep(0.02)
        print("ready", flush=True)
        if mode == "raise":
            raise RuntimeError("boom")
        p.wait()
except procs.Terminated as e:
    print("terminated", e.signum, flush=True)
    sys.exit(e.exit_code)
except RuntimeError:
    sys.exit(3)
print("done", flush=True)
'''


def _marker_procs(marker: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields after comm: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


class Driver:
    def __init__(self, tmp_path, mode: str, grace: float = 5.0, ignore_sigint: bool = False):
        self.marker = f"31337.{os.getpid()}{random.randrange(10**8):08d}"
        self.out = tmp_path / f"driver-{mode}.out"
        env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "PROCS_MARKER": self.marker,
               "PROCS_MODE": mode, "PROCS_GRACE": str(grace)}

        def preexec():
            if ignore_sigint:   # as in a non-interactive shell's background job, or nohup
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=preexec)

    def output(self) -> str:
        return self.out.read_text()

    def wait_ready(self) -> None:
        assert _until(lambda: "ready" in self.output() or self.proc.poll() is not None, 10), self.output()
        assert "ready" in self.output(), self.output()
        assert len(_marker_procs(self.marker)) >= 4, "sh, sleep, python, sleep"

    def reaper(self) -> int:
        kids = []
        for pid in _marker_procs("--reaper"):
            st = _stat(pid)
            if st and int(st[1]) == self.proc.pid:
                kids.append(pid)
        assert len(kids) == 1, kids
        return kids[0]

    def assert_clean(self, timeout: float = 5.0) -> None:
        assert _until(lambda: not _marker_procs(self.marker), timeout), \
            f"left running: {_marker_procs(self.marker)}\n{self.output()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _marker_procs(self.marker):   # only ours: the marker is unique
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def driver(tmp_path):
    started = []

    def start(*args, **kwargs) -> Driver:
        d = Driver(tmp_path, *args, **kwargs)
        started.append(d)
        return d
    yield start
    for d in started:
        d.kill()


def test_terminated_is_a_keyboard_interrupt():
    e = procs.Terminated(signal.SIGTERM)
    assert isinstance(e, KeyboardInterrupt)
    assert (e.signum, e.exit_code) == (signal.SIGTERM, 143)
    assert procs.Terminated(signal.SIGINT).exit_code == 130
    assert procs.Terminated(signal.SIGHUP).exit_code == 129
    with pytest.raises(ValueError):
        with procs.spawn_group(["true"], start_new_session=False):
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_kills_the_group(driver, sig):
    d = driver("wait")
    d.wait_ready()
    d.proc.send_signal(sig)
    assert d.proc.wait(timeout=10) == 128 + sig, d.output()
    d.assert_clean()


def test_sigint_when_inherited_ignored(driver):
    d = driver("wait", ignore_sigint=True)
    d.wait_ready()
    assert "sigint inherited: SIG_IGN" in d.output()
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=10) == 130, d.output()
    d.assert_clean()


def test_second_signal_does_not_interrupt_cleanup(driver):
    # The group ignores SIGTERM, so cleanup waits out the grace period; a second signal must not
    # abort it (exit status still that of the first) and cuts the wait short with SIGKILL.
    d = driver("wait-stubborn", grace=6)
    d.wait_ready()
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert d.proc.poll() is None, d.output()
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=10) == 143, d.output()
    assert time.monotonic() - t0 < 4
    d.assert_clean(timeout=1)


@pytest.mark.parametrize("mode", ["wait", "wait-stubborn"])
def test_sigkill_the_reaper_cleans_up(driver, mode):
    d = driver(mode)
    d.wait_ready()
    reaper = d.reaper()
    d.proc.kill()
    d.proc.wait()
    d.assert_clean()
    assert _until(lambda: not _alive(reaper), 5), "the reaper exits once its groups are gone"


def test_reaper_is_detached(driver):
    d = driver("wait")
    d.wait_ready()
    reaper = d.reaper()
    st = _stat(reaper)
    assert int(st[3]) == reaper, "own session"
    fds = {int(fd): os.readlink(f"/proc/{reaper}/fd/{fd}") for fd in os.listdir(f"/proc/{reaper}/fd")}
    assert set(fds) == {0, 1, 2}, fds
    assert fds[0].startswith("pipe:") and fds[1] == fds[2] == "/dev/null", fds

    def ignores() -> bool:
        with open(f"/proc/{reaper}/status") as f:
            mask = int(next(ln for ln in f if ln.startswith("SigIgn:")).split()[1], 16)
        return all(mask & (1 << (s - 1)) for s in procs.SIGNALS)
    assert _until(ignores, 5)
    for s in procs.SIGNALS:
        os.kill(reaper, s)
    time.sleep(0.1)
    assert _alive(reaper)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 143, d.output()
    d.assert_clean()
    assert _until(lambda: not _alive(reaper), 5)


def test_normal_exit_kills_stragglers(driver):
    d = driver("exit")   # sh exits at once, its children linger
    assert d.proc.wait(timeout=10) == 0, d.output()
    assert "ready" in d.output() and "done" in d.output()
    d.assert_clean(timeout=1)


def test_exception_in_block(driver):
    d = driver("raise")
    assert d.proc.wait(timeout=10) == 3, d.output()
    assert "ready" in d.output()
    d.assert_clean(timeout=1)
