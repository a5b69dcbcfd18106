"""One SSH connection to a target, through fabric, with the checks a root-run harness needs
against a machine it does not trust.

- Host keys: fabric's default is to accept any key it has not seen (paramiko's AutoAddPolicy);
  here an unknown key or a changed one refuses the connection (RejectPolicy), and the keys come
  from the user's known_hosts files (UserKnownHostsFile / GlobalKnownHostsFile of the SSH
  configuration, else ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts), read and never written.
- Authentication: keys and the agent only, never a password (none is ever given to fabric).
- Commands: fixed scripts with arguments that were checked against a strict pattern and are
  shell-quoted anyway; their output goes to files, read back over SFTP within a cap.
- Files: only regular files (lstat, never following a link), single-component names, bounded.

Failures become `RemoteError`s with a kind the runner records (`target-unreachable`,
`host-key`, `auth`, `target-lost`) and a reason a user can act on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import stat
from pathlib import Path
from typing import Protocol

from harness.errors import HarnessError
from harness.guest.share import excerpt
from harness.target.inventory import Target

# paramiko logs each failed connection with a traceback (to stderr through logging's last resort);
# the backend reports every failure itself, in one line per cell.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class RemoteError(HarnessError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def safe_name(name: str) -> bool:
    """A single path component made of plain characters (no '/', no leading '.')."""
    return 0 < len(name) <= 128 and not name.startswith(".") and set(name) <= _NAME_CHARS


def describe(exc: BaseException, target: Target) -> RemoteError:
    """What went wrong connecting to or talking to `target`, in words, with its kind."""
    import paramiko
    where = target.address.url if target.name == target.address.url else f"{target.name} ({target.address.url})"
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return RemoteError("host-key", f"{where}: HOST KEY MISMATCH: the server's {exc.key.get_name()} key "
                           f"{exc.key.fingerprint} is not the one known_hosts holds ({exc.expected_key.fingerprint}); "
                           "refusing to connect (check the machine, then fix known_hosts yourself)")
    if isinstance(exc, paramiko.AuthenticationException):
        return RemoteError("auth", f"{where}: authentication failed ({excerpt(str(exc), 120)}): the harness uses keys "
                           "and the agent only (IdentityFile in the SSH configuration), never a password")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return RemoteError("host-key", f"{where}: the host key is not in known_hosts ({excerpt(str(exc), 120)}); "
                           "the harness never accepts an unknown key: check its fingerprint and add it")
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError("target-unreachable", f"{where}: connection refused (is sshd running on that port?)")
    if isinstance(exc, socket.gaierror):
        return RemoteError("target-unreachable", f"{where}: host name does not resolve ({exc.strerror})")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return RemoteError("target-unreachable", f"{where}: connection timed out")
    if isinstance(exc, paramiko.SSHException) and "protocol banner" in str(exc):
        return RemoteError("target-unreachable", f"{where}: no SSH server answered (the connection was closed "
                           "before the SSH banner: is sshd running? a forwarded port with nothing behind it looks "
                           "like this)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return RemoteError("target-unreachable", f"{where}: connection refused or no route "
                           f"({excerpt(str(exc), 160)})")
    if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
        return RemoteError("target-lost", f"{where}: SSH connection failed: {type(exc).__name__}: "
                           f"{excerpt(str(exc), 160) or 'closed by the remote end'}")
    return RemoteError("target-lost", f"{where}: {type(exc).__name__}: {excerpt(str(exc), 160)}")


class Job(Protocol):
    """A command started on the target (Remote.start) that the host watches."""

    @property
    def finished(self) -> bool: ...

    def exit_status(self) -> int: ...

    def kill(self) -> None: ...


class _FabricJob:
    """fabric's Promise of an asynchronous run, its failures as RemoteError."""

    def __init__(self, promise, target: Target):
        self.promise, self.target = promise, target

    @property
    def finished(self) -> bool:
        try:
            return bool(self.promise.runner.process_is_finished)
        except Exception as e:
            raise describe(e, self.target) from None

    def exit_status(self) -> int:
        try:
            return self.promise.join().exited
        except Exception as e:
            raise describe(e, self.target) from None

    def kill(self) -> None:
        """Close its channel (the blocked flock on the target stays until the lock is free or its
        own limit passes; it holds nothing)."""
        with contextlib.suppress(Exception):
            self.promise.runner.kill()
        with contextlib.suppress(Exception):
            self.promise.join()


class Remote(Protocol):
    """What the SSH backend needs of a connection (FabricRemote; a fake in the tests)."""

    def run(self, command: str, timeout_s: float) -> int: ...

    def start(self, command: str) -> Job: ...

    def put(self, local: Path, remote: str, mode: int) -> None: ...

    def read(self, remote: str, limit: int, tail: bool = False) -> bytes | None: ...

    def listdir(self, remote: str) -> list[tuple[str, int, int]]: ...

    def close(self) -> None: ...


def known_hosts_files(ssh_config: dict) -> list[Path]:
    """The known_hosts files the SSH configuration names (OpenSSH's defaults otherwise)."""
    user = ssh_config.get("userknownhostsfile")
    glob_ = ssh_config.get("globalknownhostsfile")
    out = []
    for value, default in ((user, "~/.ssh/known_hosts ~/.ssh/known_hosts2"),
                           (glob_, "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2")):
        text = " ".join(value) if isinstance(value, list) else (value or default)
        out += [Path(os.path.expanduser(p)) for p in text.split() if p != "none"]
    return out


class FabricRemote:
    """A fabric Connection opened with strict host-key checking; `connection` is for the tests
    (a fake with fabric's interface)."""

    def __init__(self, target: Target, connection=None):
        self.target = target
        if connection is None:
            connection = self._connection(target)
        self.conn = connection
        self._sftp = None
        try:
            self.conn.open()
            self._sftp = self.conn.sftp()
            channel = getattr(self._sftp, "get_channel", lambda: None)()
            if channel is not None:   # a target that stops answering mid-transfer must not hang the run
                channel.settimeout(max(60, target.entry.connect_timeout_s))
        except BaseException as e:
            self.close()
            err = describe(e, target)
            if err.kind == "target-lost":   # nothing was running yet: the target is not there
                err = RemoteError("target-unreachable", err.reason)
            raise err from None

    @staticmethod
    def _connection(target: Target):
        import paramiko
        from fabric import Config, Connection
        e, a = target.entry, target.address
        cfg = Config(runtime_ssh_path=str(Path(e.ssh_config).expanduser())) if e.ssh_config else Config()
        conn = Connection(a.host, user=a.user, port=a.port, config=cfg, connect_timeout=e.connect_timeout_s,
                          connect_kwargs={"allow_agent": True, "look_for_keys": True, "password": None,
                                          "banner_timeout": e.connect_timeout_s, "auth_timeout": e.connect_timeout_s,
                                          "passphrase": None})
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        found = [p for p in known_hosts_files(conn.ssh_config) if p.is_file()]
        for p in found:
            conn.client.load_system_host_keys(str(p))   # "system": read, never saved back
        return conn

    def run(self, command: str, timeout_s: float) -> int:
        """Exit status of `command` (a fixed script line; its output is redirected by the caller)."""
        try:
            r = self.conn.run(command, hide=True, warn=True, timeout=timeout_s, in_stream=False, pty=False)
        except BaseException as e:
            if type(e).__name__ == "CommandTimedOut":
                raise RemoteError("target-lost", f"{self.target.name}: a command did not finish within "
                                  f"{timeout_s:.0f} s") from None
            raise describe(e, self.target) from None
        return r.exited

    def start(self, command: str) -> Job:
        """Start a command that blocks on the target (a wait on a lock: nothing runs there
        meanwhile) and return at once; the host watches the job from its own side."""
        try:
            promise = self.conn.run(command, hide=True, warn=True, in_stream=False, pty=False, asynchronous=True)
        except BaseException as e:
            raise describe(e, self.target) from None
        return _FabricJob(promise, self.target)

    def put(self, local: Path, remote: str, mode: int) -> None:
        try:
            self._sftp.put(str(local), remote)
            self._sftp.chmod(remote, mode)
        except BaseException as e:
            raise describe(e, self.target) from None

    def read(self, remote: str, limit: int, tail: bool = False) -> bytes | None:
        """A regular file's content (None: absent); a link, a non-file or more than `limit` bytes
        is a RemoteError of kind output-unreadable (`tail`: the last `limit` bytes instead)."""
        try:
            try:
                st = self._sftp.lstat(remote)
            except FileNotFoundError:
                return None
            if not stat.S_ISREG(st.st_mode or 0):
                raise RemoteError("output-unreadable", f"{remote}: not a regular file on the target (not read)")
            if (st.st_size or 0) > limit and not tail:
                raise RemoteError("output-unreadable", f"{remote}: {st.st_size} bytes, more than the "
                                  f"{limit}-byte limit")
            with self._sftp.open(remote, "rb") as fh:
                if tail and (st.st_size or 0) > limit:
                    fh.seek(st.st_size - limit)
                data = fh.read(limit + 1)
            if len(data) > limit:
                raise RemoteError("output-unreadable", f"{remote}: more than the {limit}-byte limit")
            return data
        except RemoteError:
            raise
        except BaseException as e:
            raise describe(e, self.target) from None

    def listdir(self, remote: str) -> list[tuple[str, int, int]]:
        """(name, mode, size) of each entry, without following links."""
        try:
            return [(a.filename, a.st_mode or 0, a.st_size or 0) for a in self._sftp.listdir_attr(remote)[:10_000]]
        except BaseException as e:
            raise describe(e, self.target) from None

    def close(self) -> None:
        for thing in (self._sftp, self.conn):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass


def q(*words: str) -> str:
    """A command line from words that were checked already; quoted all the same."""
    return " ".join(shlex.quote(w) for w in words)
