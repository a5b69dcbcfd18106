"""Patch development as git work: series -> editable git tree -> series.

`kernel-tree` clones the pristine source, applies the series that come before the one being
edited (tag `series-base`), then the edited series itself; the developer commits, rebases
and amends there. `export-patches` writes `series-base..HEAD` back as `git format-patch` files
and runs checkpatch.pl on them.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.errors import HarnessError, InputError
from harness.kernel import series, source
from harness.kernel.cache import BuildCache
from harness.kernel.source import git

BASE_TAG = "series-base"


def make_dev_tree(dest: Path, series_names: list[str], edit: str, src_name: str = "debian",
                  cache: BuildCache | None = None) -> Path:
    cache = cache or BuildCache()
    if edit not in series_names:
        raise InputError(f"series {edit!r} is not in the series list {series_names}")
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest} exists and is not empty: pick another path or remove it")
    src = source.resolve(src_name, cache)
    pristine = source.pristine_repo(src, cache)
    git(dest.parent if dest.parent.exists() else Path.cwd(), "clone", "--quiet", str(pristine), str(dest))
    git(dest, "checkout", "--quiet", "-b", edit, "base")
    before = series_names[: series_names.index(edit)]
    if before:
        series.apply_patches(dest, series.load_series(before))
    git(dest, "tag", "-f", BASE_TAG)
    mine = series.load_series([edit])
    if mine:
        series.apply_patches(dest, mine)
    # Commits the developer makes get their own identity, not the harness's fixed one.
    (dest / ".git" / "harness-series").write_text(edit + "\n")
    return dest


@dataclass(frozen=True)
class Exported:
    files: list[Path]
    checkpatch: str
    clean: bool


def export_patches(tree: Path, series_name: str | None = None, patches_dir: Path | None = None) -> Exported:
    tree = tree.resolve()
    marker = tree / ".git" / "harness-series"
    if series_name is None:
        if not marker.is_file():
            raise InputError(f"{tree} was not made by kernel-tree: pass --series")
        series_name = marker.read_text().strip()
    if git(tree, "rev-parse", "--verify", "--quiet", BASE_TAG, check=False).returncode != 0:
        raise InputError(f"{tree} has no '{BASE_TAG}' tag: was it made by kernel-tree?")
    if git(tree, "status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise InputError(f"{tree} has uncommitted changes: commit them first")
    out_dir = (patches_dir or paths.PATCHES_DIR) / series_name
    out_dir.mkdir(parents=True, exist_ok=True)
    count = len(git(tree, "rev-list", f"{BASE_TAG}..HEAD").stdout.split())
    old = sorted(out_dir.glob("*.patch"))
    for p in old:
        p.unlink()
    if count:
        # a fixed abbreviation: git's default grows with the repository, so the same series
        # exported from two trees would differ in its index lines
        git(tree, "-c", "core.abbrev=12", "format-patch", "--quiet", "--zero-commit", "--no-signature",
            "--no-numbered", "--start-number", "0", "-o", str(out_dir), f"{BASE_TAG}..HEAD")
    files = sorted(out_dir.glob("*.patch"))
    report, clean = checkpatch(tree, files)
    return Exported(files, report, clean)


def checkpatch(tree: Path, files: list[Path]) -> tuple[str, bool]:
    """scripts/checkpatch.pl on each patch, run from a kernel tree; clean = no errors and no warnings."""
    if not files:
        return "no patches", True
    script = tree / "scripts" / "checkpatch.pl"
    if not script.is_file():
        raise HarnessError(f"{script} not found")
    def run(f: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["perl", str(script), "--terse", "--show-types", str(f)], cwd=tree,
                              capture_output=True, text=True)

    # one perl per patch, as many at once as there are CPUs (a series of a dozen took a minute
    # one after the other on 2 cores); the report keeps the series' order
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        procs = list(pool.map(run, files))
    reports, clean = [], True
    for f, proc in zip(files, procs, strict=True):
        text = proc.stdout.strip()
        if proc.returncode != 0 or "WARNING" in text or "ERROR" in text:
            clean = False
        reports.append(f"{f.name}: " + ("clean" if not text and proc.returncode == 0 else "problems"))
        reports.extend("  " + ln for ln in text.splitlines())
    return "\n".join(reports), clean
