"""The content-addressed build cache and the file locks that keep concurrent builds apart.

Layout under paths.cache_dir():
    sources/<id>/      pristine kernel source as a git repository, tag `base`
    trees/<id>/        git worktrees with a patch series applied (`git am`)
    objs/<tree>-<arch>/ out-of-tree (O=) build directories, reused across configs
    builds/<key>/      finished builds: image, vmlinux, .config, build.log, metadata.json
    index/<req>.json   request key -> build key, so a hit needs no tree and no make
    ccache/            compiler cache for misses
    state/             memoised file hashes, locks
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import paths
from harness.errors import HarnessError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


class BuildCache:
    def __init__(self, root: Path | None = None):
        self.root = (root or paths.cache_dir()).resolve()

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive advisory lock, held across processes (two builds of one tree wait in turn).
        A wait says so on stderr, with the holder's pid, instead of hanging silently."""
        path = self.dir("state") / f"{name}.lock"
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read(64).strip()
                print(f"waiting for the cache lock {name}" + (f" (held by pid {holder})" if holder.isdigit() else "")
                      + " ...", file=sys.stderr, flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fh.flush()
                fcntl.flock(fh, fcntl.LOCK_UN)

    def file_sha256(self, path: Path) -> str:
        """sha256 of a file, memoised by (path, size, mtime) so a 140 MB tarball is hashed once."""
        st = path.stat()
        memo_path = self.dir("state") / "sha256.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            memo = {}
        stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if stamp in memo:
            return memo[stamp]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        memo[stamp] = h.hexdigest()
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
        return memo[stamp]

    # request key -> build key
    def lookup(self, request_key: str) -> Path | None:
        """The finished build for a request, if there is one and it is complete."""
        try:
            entry = json.loads((self.root / "index" / f"{request_key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        build = self.root / "builds" / entry["build_key"]
        return build if (build / "metadata.json").is_file() else None

    def record(self, request_key: str, build_key: str) -> None:
        atomic_write_text(self.dir("index") / f"{request_key}.json",
                          json.dumps({"build_key": build_key}, indent=1))

    def disk_free_gib(self) -> float:
        path = self.root
        while not path.exists():
            path = path.parent
        return shutil.disk_usage(path).free / 2**30

    def require_free(self, need_gib: float, what: str) -> None:
        """Fail before starting `what`, not half-way through it, when the disk is nearly full."""
        free = self.disk_free_gib()
        if free < need_gib:
            raise HarnessError(f"only {free:.1f} GiB free under {self.root}; {what} needs about {need_gib:.0f} GiB. "
                               "Free some space or point HARNESS_CACHE_DIR at a larger disk.")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file, fsync, rename: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())   # the data is on disk before the name points at it
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
