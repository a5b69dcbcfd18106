"""Kernel sources: Debian's linux-source-6.12, a tarball, or a local git tree.

Each source gets a stable identity (package version + tarball hash, or commit id) for cache
keys, and a pristine git repository in the cache with the source committed and tagged
`base`, so that patch series are applied with `git am` as kernel developers do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import procs
from harness.errors import HarnessError, InputError
from harness.kernel.cache import BuildCache

DEBIAN_PACKAGE = "linux-source-6.12"
DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")

# A fixed identity for the commits the harness makes, so they never depend on the user's git setup.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "agent-latency harness", "GIT_AUTHOR_EMAIL": "harness@localhost",
    "GIT_COMMITTER_NAME": "agent-latency harness", "GIT_COMMITTER_EMAIL": "harness@localhost",
    "GIT_AUTHOR_DATE": "2024-11-17T00:00:00Z", "GIT_COMMITTER_DATE": "2024-11-17T00:00:00Z",
}


def git(cwd: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV, **(env or {})})
    if check and proc.returncode != 0:
        raise HarnessError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class KernelSource:
    kind: str        # debian | tarball | git
    path: Path
    identity: str    # content identity, part of every cache key
    description: str

    @property
    def short_id(self) -> str:
        return self.identity.rsplit(":", 1)[-1][:16]


def resolve(source: str, cache: BuildCache, base_dir: Path | None = None) -> KernelSource:
    """Identify the source named in an experiment, without unpacking anything."""
    if source == "debian":
        if not DEBIAN_TARBALL.is_file():
            raise HarnessError(f"{DEBIAN_TARBALL} is missing: install {DEBIAN_PACKAGE} (bash scripts/setup.sh)")
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", DEBIAN_PACKAGE],
                                 capture_output=True, text=True).stdout.strip() or "unknown"
        digest = cache.file_sha256(DEBIAN_TARBALL)
        return KernelSource("debian", DEBIAN_TARBALL, f"debian:{DEBIAN_PACKAGE}={version}:{digest}",
                            f"Debian {DEBIAN_PACKAGE} {version}")
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    path = path.resolve()
    if path.is_dir():
        if not (path / ".git").exists() or not (path / "Makefile").is_file():
            raise InputError(f"kernel source {path}: a directory must be a kernel git tree")
        dirty = git(path, "status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise InputError(f"kernel source {path} has uncommitted changes: commit them so the build "
                             "can be identified by its commit")
        head = git(path, "rev-parse", "HEAD").stdout.strip()
        return KernelSource("git", path, f"git:{head}", f"git tree {path} at {head[:12]}")
    if path.is_file():
        return KernelSource("tarball", path, f"tar:{cache.file_sha256(path)}", f"tarball {path}")
    raise InputError(f"kernel source {path} does not exist")


def pristine_repo(src: KernelSource, cache: BuildCache) -> Path:
    """A git repository of the unpatched source with tag `base`, made once per source."""
    repo = cache.dir("sources") / src.short_id
    with cache.lock(f"source-{src.short_id}"):
        if (repo / ".harness-complete").is_file():
            return repo
        if src.kind != "git":
            cache.require_free(3.0, "unpacking the kernel source")
        shutil.rmtree(repo, ignore_errors=True)
        tmp = repo.with_name(repo.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _fill_pristine(src, tmp)
        except BaseException:   # nothing half-unpacked stays in the cache
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(repo)
    return repo


def _fill_pristine(src: KernelSource, tmp: Path) -> None:
    if src.kind == "git":
        # a local clone hardlinks objects: cheap, and unaffected by a later gc in the user's tree
        git(tmp.parent, "clone", "--quiet", "--no-checkout", str(src.path), tmp.name)
        git(tmp, "checkout", "--quiet", "--detach", src.identity.split(":", 1)[1])
    else:
        proc = procs.run_group(["tar", "-xf", str(src.path), "-C", str(tmp), "--strip-components=1"],
                               capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"unpacking {src.path} failed:\n{proc.stderr.strip()}")
        if not (tmp / "Makefile").is_file() or not (tmp / "Kconfig").is_file():
            raise InputError(f"{src.path} does not look like a kernel source tarball "
                             "(no top-level Makefile/Kconfig)")
        note = _drop_debian_ignore_rule(tmp / ".gitignore")
        git(tmp, "init", "--quiet")
        git(tmp, "config", "gc.auto", "0")
        git(tmp, "add", "-A")
        git(tmp, "commit", "--quiet", "-m", f"base: {src.description}" + note)
    git(tmp, "tag", "-f", "base")
    (tmp / ".git" / "info").mkdir(exist_ok=True)
    with open(tmp / ".git" / "info" / "exclude", "a") as fh:
        fh.write(".harness-complete\n")
    (tmp / ".harness-complete").write_text(src.identity + "\n")


_DEBIAN_RULE = "/*\n!/debian/\n"


def _drop_debian_ignore_rule(gitignore: Path) -> str:
    """Debian's linux-source adds `/*` to .gitignore (its packaging keeps the tree elsewhere), which
    hides every file from git. Remove that rule so the tree can be committed and patched."""
    if not gitignore.is_file() or _DEBIAN_RULE not in (text := gitignore.read_text()):
        return ""
    gitignore.write_text(text.replace(_DEBIAN_RULE, ""))
    return "\n\nDebian's packaging rule '/*' was removed from .gitignore so that git sees the tree."
