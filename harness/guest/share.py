"""The host's side of the read-write share: every read of what the guest wrote goes through here.

The guest is root in a VM whose results directory is a 9p share, so a symlink it makes there is
a real symlink on the host, where the harness runs as root. The host therefore never follows a
link in the share, never reads a file that is not a regular file, and never reads more than a cap:
files are opened relative to the share's directory fd with O_NOFOLLOW and O_NONBLOCK (a FIFO
must not hang the reader), checked with fstat, and read to a limit. Names are single path
components chosen by the host (the protocol module), never by the guest. What the guest wrote is
quoted in host messages only as a short excerpt with control characters removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError

KIB = 1 << 10
MIB = 1 << 20
# Caps per kind of file the guest writes. A steps file of a long run is tens of MB (about 60 bytes a
# step); bpftrace's event output is the largest legitimate file.
LIMIT_STATUS = 64 * KIB
LIMIT_SMALL = 1 * MIB          # platform snapshots, summaries, stderr, the file index
LIMIT_STEPS = 512 * MIB
LIMIT_PROBE = 1024 * MIB
EXCERPT_CHARS = 200


class ShareError(HarnessError):
    """A file in the share that the host will not read: a link, not a regular file, too big, absent."""


class MissingFile(ShareError):
    pass


# Reopening an O_PATH fd through /proc/self/fd/N follows that magic link to the very file the fd
# holds (no lookup of a name the guest controls), so O_NOFOLLOW must not be set there.
_REOPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a single path component: {name!r}")


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """An fd of the share (or of a host-made directory in it), never through a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ShareError(f"{path}: cannot open the directory: {e.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _open_regular(dfd: int, name: str) -> int:
    """An fd open for reading on a regular file `name` in the directory `dfd`. The name is first
    taken with O_PATH (which opens nothing: a device node the guest made is never opened, so
    opening it can have no side effect), checked, and only then reopened for reading."""
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise MissingFile(f"{name}: missing") from None
    except OSError as e:
        raise ShareError(f"{name}: cannot open: {e.strerror}") from None
    try:
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise ShareError(f"{name}: is a symbolic link (not followed)")
        if not stat.S_ISREG(st.st_mode):
            raise ShareError(f"{name}: not a regular file")
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", _REOPEN)
        except OSError as e:
            raise ShareError(f"{name}: cannot open: {e.strerror}") from None
    finally:
        os.close(pfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):   # replaced between the two opens
        os.close(fd)
        raise ShareError(f"{name}: not a regular file")
    return fd


def read_bytes(path: Path, limit: int) -> bytes:
    """The content of a regular file in the share, at most `limit` bytes (more is an error)."""
    parent, name = path.parent, path.name
    _check_name(name)
    with open_dir(parent) as dfd:
        fd = _open_regular(dfd, name)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise ShareError(f"{name}: {st.st_size} bytes, more than the {limit}-byte limit")
        chunks, total = [], 0
        while True:   # the size can change under us: the cap holds on what is read, not on fstat
            chunk = os.read(fd, min(MIB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ShareError(f"{name}: more than the {limit}-byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, limit: int) -> str:
    return read_bytes(path, limit).decode("utf-8", errors="replace")


def read_text_or_none(path: Path, limit: int) -> str | None:
    """Like read_text, but an absent file is None (a link or an oversized file still raises)."""
    try:
        return read_text(path, limit)
    except MissingFile:
        return None


def exists_regular(path: Path) -> bool:
    """A regular file (not a link) of that name is in the share."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def copy_out(src: Path, dst: Path, limit: int) -> None:
    """Copy a guest file from the share to a host-owned place (bounded, links refused). `dst` is
    created exclusively, so a name the guest planted outside the share cannot be written through."""
    data = read_bytes(src, limit)
    with create_exclusive(dst) as fh:
        fh.write(data)


@contextlib.contextmanager
def create_exclusive(path: Path, mode: str = "wb"):
    """A new file, never through an existing name or a link (O_CREAT|O_EXCL|O_NOFOLLOW)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, mode) as fh:
        yield fh


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """What a host message may quote of guest output: printable ASCII, whitespace folded, short."""
    clean = "".join(c if c.isprintable() and c.isascii() else " " for c in text)
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def remove_tree(path: Path) -> None:
    """Remove a tree the guest may have shaped (links, devices, thousands of nested directories):
    GNU rm walks it iteratively, never follows a link and stays on one filesystem. Python 3.11's
    shutil.rmtree recurses once per level and fails on deep trees."""
    if not path.exists() and not path.is_symlink():
        return
    r = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True)
    if r.returncode or path.exists() or path.is_symlink():
        raise HarnessError(f"cannot remove {path}: {excerpt(r.stderr) or 'rm failed'}")


def reset(share: Path) -> None:
    """An empty share directory, readable by root only: whatever an earlier guest left (links
    included) is removed without being followed, so a retry starts from what the host writes and
    nothing the guest planted."""
    remove_tree(share)
    share.mkdir(mode=0o700, parents=True)
    os.chmod(share, 0o700)


def neutralise(share: Path) -> list[str]:
    """After a guest has run: anything in the share that is neither a regular file nor a directory
    (device nodes, FIFOs, sockets; 9p with security_model=none passes mknod and setuid bits through
    to the host as root) is removed, and set-id bits are cleared, so the results directory keeps no
    device or setuid file of the guest's making. Links are removed too (nothing needs them).
    Returns what was removed or changed, for the record."""
    done: list[str] = []
    stack = [share]
    while stack:   # iterative: the guest chooses the depth
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = os.path.relpath(e.path, share)
            if stat.S_ISDIR(st.st_mode):
                if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(e.path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID), follow_symlinks=False)
                stack.append(Path(e.path))
            elif stat.S_ISREG(st.st_mode):
                if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(e.path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID | 0o111))
                    done.append(f"{rel}: set-id bits cleared")
            else:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                done.append(f"{rel}: {_kind(st.st_mode)} removed")
    return done


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"
