"""Child process groups that never outlive the harness.

make and vng run in their own sessions (so a terminal's Ctrl-C reaches the harness first and the
harness decides how to stop them). Three layers make sure those groups die with the harness:

* ``spawn_group``: a with-block owns one group; leaving it any way (normal, exception, signal)
  sends the whole group SIGTERM, waits up to a grace period, SIGKILLs what is left and reaps.
* ``install_signal_handlers``: SIGINT, SIGTERM and SIGHUP raise ``Terminated`` (a
  KeyboardInterrupt) in the main thread whatever the inherited dispositions (SIG_IGN under nohup
  or a non-interactive shell's background job), so the with-blocks above get to run.
* a reaper: one small helper process per harness process, in its own session and ignoring those
  signals, told "add PGID" / "del PGID" over a pipe; when the pipe reaches EOF (the harness died,
  even by SIGKILL) it kills every group still registered. Each direct child also gets
  PR_SET_PDEATHSIG(SIGKILL) (best effort; it covers only the direct child, e.g. vng's ``sh``).

The module imports nothing of the harness: ``python -I -S harness/procs.py --reaper`` runs the
reaper without site-packages.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_GRACE_S = 8.0     # SIGTERM -> SIGKILL in spawn_group / kill_all_groups
REAPER_GRACE_S = 3.0      # the same, in the reaper once the harness is gone
_POLL_S = 0.05


class Terminated(KeyboardInterrupt):
    """The harness got SIGINT, SIGTERM or SIGHUP; exit with ``exit_code`` (128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


# --------------------------------------------------------------------------- process groups

def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in group pgid."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # killpg counts an unreaped zombie leader: look for a live member
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_groups(pgids: list[int], grace: float) -> None:
    """SIGTERM every group, wait up to grace for them to empty, SIGKILL the rest."""
    try:
        for g in pgids:
            _killpg(g, signal.SIGTERM)
        deadline = time.monotonic() + grace
        alive = [g for g in pgids if _group_alive(g)]
        while alive and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            alive = [g for g in alive if _group_alive(g)]
    finally:
        for g in pgids:
            _killpg(g, signal.SIGKILL)


# --------------------------------------------------------------------------- the reaper

def _reaper_main(grace: float) -> int:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        try:
            op, arg = line.split()
            pgid = int(arg)
        except ValueError:
            continue
        if pgid <= 1:
            continue
        if op == b"add":
            groups.add(pgid)
        elif op == b"del":
            groups.discard(pgid)
    if groups:   # EOF: the harness is gone (or exited without unregistering)
        _kill_groups(sorted(groups), grace)
    return 0


class _State:
    lock = threading.Lock()
    groups: dict[int, subprocess.Popen] = {}
    reaper: subprocess.Popen | None = None
    reaper_fd: int | None = None
    reaper_failed = False
    signum: int | None = None      # first signal received
    pending: int | None = None     # received inside a main-thread critical section
    defer = 0                      # main thread inside a critical section
    prctl = None


def _start_reaper() -> None:   # with _State.lock held
    r, w = os.pipe()
    try:
        _State.reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "--reaper", str(REAPER_GRACE_S)],
            stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
            start_new_session=True, cwd="/")
    except OSError as e:
        os.close(w)
        _State.reaper_failed = True
        warnings.warn(f"harness.procs: no reaper ({e}); child groups die only with a clean exit",
                      RuntimeWarning, stacklevel=3)
        return
    finally:
        os.close(r)
    _State.reaper_fd = w
    for pgid in _State.groups:
        _write(f"add {pgid}\n".encode())


def _write(data: bytes) -> bool:
    try:
        os.write(_State.reaper_fd, data)
        return True
    except OSError:
        return False


def _tell_reaper(op: str, pgid: int) -> None:   # with _State.lock held
    if _State.reaper_fd is None:
        if op == "add" and not _State.reaper_failed:
            _start_reaper()   # sends every registered group
        return
    if not _write(f"{op} {pgid}\n".encode()):   # the reaper died: start another one
        with contextlib.suppress(OSError):
            os.close(_State.reaper_fd)
        _State.reaper_fd = None
        if _State.reaper is not None:
            _State.reaper.poll()
        if _State.groups:
            _start_reaper()


def _register(proc: subprocess.Popen) -> None:
    with _State.lock:
        _State.groups[proc.pid] = proc
        _tell_reaper("add", proc.pid)


def _unregister(pgid: int) -> None:
    with _State.lock:
        if _State.groups.pop(pgid, None) is not None:
            _tell_reaper("del", pgid)


def _after_fork_child() -> None:
    # A forked copy of the harness must neither hold the reaper's pipe open (it would never see
    # EOF) nor clean up groups that belong to its parent.
    if _State.reaper_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_State.reaper_fd)
    _State.lock = threading.Lock()
    _State.groups = {}
    _State.reaper = None
    _State.reaper_fd = None
    _State.defer = 0


# --------------------------------------------------------------------------- signals

def _signal_groups(sig: int) -> None:
    for pgid, proc in list(_State.groups.items()):
        if proc.returncode is None:
            _killpg(pgid, sig)


def _on_signal(signum, frame) -> None:
    if _State.signum is not None:
        # Already stopping: never interrupt the cleanup, but stop waiting for the grace period.
        _signal_groups(signal.SIGKILL)
        return
    _State.signum = signum
    _signal_groups(signal.SIGTERM)   # groups other threads wait on stop too
    if _State.defer:
        _State.pending = signum
        return
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """From now on SIGINT, SIGTERM and SIGHUP (even if inherited as SIG_IGN or blocked) raise
    Terminated(signum) in the main thread, the first time; every registered group gets SIGTERM.
    A later signal raises nothing (cleanup runs to the end) but SIGKILLs the registered groups.
    Call from the main thread, early (cli.main)."""
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def terminating() -> int | None:
    """The signal the harness is stopping for, if any (for worker threads' loops)."""
    return _State.signum


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    main = threading.current_thread() is threading.main_thread()
    if main:
        _State.defer += 1
    try:
        yield
    finally:
        if main:
            _State.defer -= 1
            if not _State.defer and _State.pending is not None:
                signum, _State.pending = _State.pending, None
                raise Terminated(signum)


# --------------------------------------------------------------------------- spawn_group

def _pdeathsig_setup():
    """The child's preexec: SIGKILL it when the thread that forked it dies (best effort)."""
    if _State.prctl is None:
        try:
            import ctypes
            _State.prctl = ctypes.CDLL(None, use_errno=True).prctl   # resolved here, not in the child
        except (OSError, AttributeError):
            _State.prctl = False
    prctl, parent, sigkill = _State.prctl, os.getpid(), int(signal.SIGKILL)

    def setup() -> None:
        if prctl:
            prctl(1, sigkill, 0, 0, 0)   # PR_SET_PDEATHSIG
        if os.getppid() != parent:       # the parent died before prctl
            os.kill(os.getpid(), sigkill)
    return setup


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    pgid = proc.pid
    try:
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
    finally:
        _killpg(pgid, signal.SIGKILL)
        _unregister(pgid)   # while the leader is unreaped, so the pgid cannot be reused yet
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


@contextlib.contextmanager
def spawn_group(cmd, *, grace: float = DEFAULT_GRACE_S, **popen_kwargs) -> Iterator[subprocess.Popen]:
    """``with spawn_group(cmd, stdout=..., ...) as proc:`` runs ``subprocess.Popen(cmd,
    **popen_kwargs)`` in a new session (pgid == proc.pid) registered with the reaper. Leaving the
    block any way SIGTERMs the whole group, waits up to ``grace`` s for it to empty, SIGKILLs the
    rest, reaps proc and closes its pipes. Raises Terminated if the harness is already stopping."""
    if popen_kwargs.pop("start_new_session", True) is not True or "process_group" in popen_kwargs:
        raise ValueError("spawn_group always starts a new session")
    user_preexec = popen_kwargs.pop("preexec_fn", None)
    if _State.signum is not None:
        raise Terminated(_State.signum)
    setup = _pdeathsig_setup()

    def preexec() -> None:
        setup()
        if user_preexec is not None:
            user_preexec()

    proc = None
    try:
        with _signals_deferred():   # a signal here is raised once proc is registered
            proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=preexec, **popen_kwargs)
            _register(proc)
        yield proc
    finally:
        if proc is not None:
            with _signals_deferred():   # a first signal during cleanup is raised after it
                _terminate(proc, grace)


def kill_all_groups(grace: float = DEFAULT_GRACE_S) -> None:
    """Stop every group spawn_group registered (all at once: one grace period in total), reap
    their leaders. Also run at exit."""
    procs = dict(_State.groups)
    if not procs:
        return
    try:
        _kill_groups(list(procs), grace)
    finally:
        for pgid, proc in procs.items():
            _unregister(pgid)
            proc.wait()


def _at_exit() -> None:
    kill_all_groups()
    with _State.lock:
        fd, reaper = _State.reaper_fd, _State.reaper
        _State.reaper_fd = _State.reaper = None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if reaper is not None:   # it exits at EOF; do not leave it a zombie to warn about
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(timeout=1)


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_child)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reaper"]:
        sys.exit(_reaper_main(float(sys.argv[2]) if len(sys.argv) > 2 else REAPER_GRACE_S))
    sys.exit("usage: procs.py --reaper [GRACE_S]")


def run_group(cmd, *, input=None, grace: float = DEFAULT_GRACE_S, **popen_kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a command that may start children of its own (make, mmdebstrap,
    merge_config.sh, mkfs): the same arguments, but the whole group is stopped with the harness."""
    if input is not None:
        popen_kwargs.setdefault("stdin", subprocess.PIPE)
    capture = popen_kwargs.pop("capture_output", False)
    if capture:
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
    with spawn_group(cmd, grace=grace, **popen_kwargs) as proc:
        out, err = proc.communicate(input)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
