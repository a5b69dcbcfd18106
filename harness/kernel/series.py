"""Patch series: `git format-patch` files under kernel/patches/<series>/, applied with `git am`."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.errors import HarnessError, InputError
from harness.kernel.cache import BuildCache, sha256_bytes, sha256_json
from harness.kernel.source import KernelSource, git


@dataclass(frozen=True)
class Patch:
    series: str
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.series}/{self.path.name}"


class PatchError(HarnessError):
    """A patch of the series does not apply to the source."""


def load_series(names: list[str], patches_dir: Path | None = None) -> list[Patch]:
    """All patches of the named series, in series order then file order. An empty list is a stock kernel."""
    root = patches_dir or paths.PATCHES_DIR
    out = []
    for name in names:
        d = root / name
        if not d.is_dir():
            raise InputError(f"no patch series {d}")
        for p in sorted(d.glob("*.patch")):
            data = p.read_bytes()
            if not data.startswith(b"From "):
                raise InputError(f"{p} is not a git format-patch file (it must start with a 'From <sha>' line)")
            out.append(Patch(name, p, sha256_bytes(data)))
    return out


def tree_key(src: KernelSource, patches: list[Patch]) -> str:
    """Identity of a source with a series applied."""
    return sha256_json({"source": src.identity, "patches": [p.sha256 for p in patches]})[:16]


def checkout_series(src: KernelSource, pristine: Path, patches: list[Patch], cache: BuildCache) -> Path:
    """The source's one build worktree, with exactly `patches` applied on `base`.

    One tree per source, as a kernel developer keeps one tree: switching series rewrites only
    the files that differ, so the O= directory rebuilds only what changed and ccache sees the
    same paths every time. The caller holds the `tree-<source>` lock while it builds.
    """
    key = tree_key(src, patches)
    tree = cache.dir("trees") / src.short_id
    marker = cache.root / "trees" / f"{src.short_id}.applied"
    if (tree / ".git").exists() and marker.is_file() and marker.read_text().split("\n", 1)[0] == key:
        return tree
    marker.unlink(missing_ok=True)
    if not (tree / ".git").exists():
        _remove_worktree(pristine, tree)
        git(pristine, "worktree", "add", "--quiet", "--detach", str(tree), "base")
    else:
        git(tree, "am", "--abort", check=False)
        git(tree, "checkout", "--quiet", "--force", "--detach", "base")
        git(tree, "clean", "-fdq")
    if patches:
        apply_patches(tree, patches)
    marker.write_text(key + "\n" + "\n".join(p.name for p in patches) + "\n")
    return tree


def apply_patches(tree: Path, patches: list[Patch]) -> None:
    """`git am` the patches; on failure name the patch and show the hunk that did not apply."""
    proc = git(tree, "am", "--quiet", *[str(p.path) for p in patches], check=False)
    if proc.returncode == 0:
        return
    out = proc.stdout + proc.stderr
    # git am stops with the patches before the failing one committed: count them before aborting
    applied = len(git(tree, "rev-list", "base..HEAD", check=False).stdout.split())
    git(tree, "am", "--abort", check=False)
    failed = patches[min(applied, len(patches) - 1)]
    where = re.search(r"error: patch failed: (\S+):(\d+)", out)
    missing = re.search(r"error: (\S+): does not exist in index", out)
    detail = ""
    if where:
        detail = f"\nfailing hunk in {where.group(1)} at line {where.group(2)}:\n" + \
                 failing_hunk(failed.path, where.group(1), int(where.group(2)))
    elif missing:
        detail = f"\nthe patch modifies {missing.group(1)}, which the source does not have"
    raise PatchError(f"patch {failed.name} does not apply to the base source{detail}\n\ngit am said:\n{out.strip()}")


def failing_hunk(patch: Path, file: str, line: int) -> str:
    """The hunk of `patch` that touches `file` starting at `line` (git's report), as text."""
    text = patch.read_text(errors="replace")
    in_file = False
    hunks: list[list[str]] = []
    for ln in text.splitlines():
        if ln.startswith("diff --git "):
            in_file = ln.endswith(f" b/{file}")
            continue
        if in_file and ln.startswith("@@"):
            hunks.append([ln])
        elif in_file and hunks and ln[:1] in (" ", "+", "-", "\\"):
            hunks[-1].append(ln)
    for h in hunks:
        m = re.match(r"@@ -(\d+)", h[0])
        if m and int(m.group(1)) == line:
            return "\n".join(h)
    return "\n".join(hunks[0]) if hunks else "(hunk not found in the patch)"


def _remove_worktree(pristine: Path, tree: Path) -> None:
    if tree.exists():
        git(pristine, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(tree, ignore_errors=True)
    git(pristine, "worktree", "prune", check=False)
