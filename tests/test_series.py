"""Patch series on a small synthetic git source: git am in a cached worktree, a failing
patch named with its hunk, an empty series as a stock tree."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.kernel import series, source
from harness.kernel.cache import BuildCache


def sh(cwd, *cmd):
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}).stdout


@pytest.fixture
def fake_kernel(tmp_path):
    """A git 'kernel' with Makefile, Kconfig and a text file, plus a series made with format-patch."""
    src = tmp_path / "linux"
    src.mkdir()
    (src / "Makefile").write_text("all:\n")
    (src / "Kconfig").write_text("")
    (src / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    sh(src, "git", "init", "-q")
    sh(src, "git", "add", "-A")
    sh(src, "git", "commit", "-qm", "base")
    base = sh(src, "git", "rev-parse", "HEAD").strip()
    (src / "a.txt").write_text((src / "a.txt").read_text().replace("line 10\n", "line 10 changed\n"))
    sh(src, "git", "commit", "-qam", "change line 10")
    (src / "b.txt").write_text("new\n")
    sh(src, "git", "add", "b.txt")
    sh(src, "git", "commit", "-qm", "add b")
    pdir = tmp_path / "patches"
    sh(src, "git", "format-patch", "-q", "-o", str(pdir / "good"), f"{base}..HEAD")
    sh(src, "git", "reset", "-q", "--hard", base)
    return src, pdir


def test_series_applies_in_cached_worktree(fake_kernel, tmp_path):
    src_dir, pdir = fake_kernel
    cache = BuildCache(tmp_path / "cache")
    src = source.resolve(str(src_dir), cache)
    assert src.kind == "git"
    patches = series.load_series(["good"], pdir)
    assert [p.path.name[:4] for p in patches] == ["0001", "0002"]
    pristine = source.pristine_repo(src, cache)
    tree = series.checkout_series(src, pristine, patches, cache)
    assert "line 10 changed" in (tree / "a.txt").read_text()
    assert (tree / "b.txt").read_text() == "new\n"
    log = sh(tree, "git", "log", "--format=%s", "base..HEAD").split("\n")
    assert log[:2] == ["add b", "change line 10"]
    # the same series again: nothing is touched
    mtime = (tree / "a.txt").stat().st_mtime_ns
    assert series.checkout_series(src, pristine, patches, cache) == tree
    assert (tree / "a.txt").stat().st_mtime_ns == mtime


def test_switching_series_reuses_one_tree_and_touches_only_what_differs(fake_kernel, tmp_path):
    src_dir, pdir = fake_kernel
    cache = BuildCache(tmp_path / "cache")
    src = source.resolve(str(src_dir), cache)
    pristine = source.pristine_repo(src, cache)
    patches = series.load_series(["good"], pdir)
    tree = series.checkout_series(src, pristine, patches, cache)
    untouched = (tree / "Makefile").stat().st_mtime_ns
    stock = series.checkout_series(src, pristine, [], cache)
    assert stock == tree
    assert (tree / "a.txt").read_text() == (src_dir / "a.txt").read_text()
    assert not (tree / "b.txt").exists()                        # files the series added are gone
    assert (tree / "Makefile").stat().st_mtime_ns == untouched  # an incremental build stays incremental
    assert series.checkout_series(src, pristine, patches, cache) == tree
    assert (tree / "b.txt").exists()


def test_empty_series_is_the_stock_tree(fake_kernel, tmp_path):
    src_dir, _ = fake_kernel
    cache = BuildCache(tmp_path / "cache")
    src = source.resolve(str(src_dir), cache)
    tree = series.checkout_series(src, source.pristine_repo(src, cache), [], cache)
    assert (tree / "a.txt").read_text() == (src_dir / "a.txt").read_text()


def test_failing_patch_names_patch_and_hunk(fake_kernel, tmp_path):
    src_dir, pdir = fake_kernel
    # The source moves on: line 10 is different, so the first patch's hunk cannot apply.
    (src_dir / "a.txt").write_text((src_dir / "a.txt").read_text().replace("line 10\n", "line ten\n"))
    sh(src_dir, "git", "commit", "-qam", "diverge")
    cache = BuildCache(tmp_path / "cache")
    src = source.resolve(str(src_dir), cache)
    with pytest.raises(series.PatchError) as exc:
        series.checkout_series(src, source.pristine_repo(src, cache), series.load_series(["good"], pdir), cache)
    msg = str(exc.value)
    assert "patch good/0001-change-line-10.patch does not apply" in msg
    assert "failing hunk in a.txt at line 7" in msg
    assert "-line 10\n+line 10 changed" in msg
    # nothing half-applied is taken for a finished tree
    assert not list((tmp_path / "cache" / "trees").glob("*.applied"))


def test_failure_in_a_later_patch_names_that_patch(fake_kernel, tmp_path):
    src_dir, pdir = fake_kernel
    (src_dir / "b.txt").write_text("already here\n")      # the second patch creates b.txt
    sh(src_dir, "git", "add", "b.txt")
    sh(src_dir, "git", "commit", "-qm", "b exists")
    cache = BuildCache(tmp_path / "cache")
    src = source.resolve(str(src_dir), cache)
    with pytest.raises(series.PatchError, match=r"patch good/0002-add-b\.patch does not apply"):
        series.checkout_series(src, source.pristine_repo(src, cache), series.load_series(["good"], pdir), cache)


def test_not_a_format_patch_file(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "0001-x.patch").write_text("--- a/x\n+++ b/x\n")
    with pytest.raises(InputError, match="not a git format-patch file"):
        series.load_series(["s"], tmp_path)


def test_dirty_git_source_is_refused(fake_kernel, tmp_path):
    src_dir, _ = fake_kernel
    (src_dir / "a.txt").write_text("dirty\n")
    with pytest.raises(InputError, match="uncommitted changes"):
        source.resolve(str(src_dir), BuildCache(tmp_path / "cache"))


def make_tarball(tmp_path, files: dict[str, str]) -> Path:
    """A tarball with one top-level directory holding `files`, as kernel tarballs have."""
    top = tmp_path / "d"
    top.mkdir(exist_ok=True)
    for name, text in files.items():
        (top / name).write_text(text)
    t = tmp_path / "k.tar"
    subprocess.run(["tar", "-cf", str(t), "-C", str(tmp_path), "d"], check=True)
    return t


def test_tarball_source_identity_is_content(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    t = make_tarball(tmp_path, {"f": "1"})
    a = source.resolve(str(t), cache)
    assert a.kind == "tarball" and a.identity.startswith("tar:")
    assert source.resolve(str(t), cache).identity == a.identity
    make_tarball(tmp_path, {"f": "2"})
    assert source.resolve(str(t), cache).identity != a.identity


def test_nearly_full_disk_fails_before_unpacking(tmp_path, monkeypatch):
    cache = BuildCache(tmp_path / "cache")
    t = make_tarball(tmp_path, {"Makefile": ""})
    monkeypatch.setattr(BuildCache, "disk_free_gib", lambda self: 0.4)
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"only 0\.4 GiB free under .*unpacking the kernel source needs about 3"):
        source.pristine_repo(source.resolve(str(t), cache), cache)
    assert not any((tmp_path / "cache" / "sources").iterdir())     # nothing half-unpacked left behind


def test_nearly_full_disk_fails_a_build_before_make(tmp_path, monkeypatch, fake_kernel):
    from harness.errors import HarnessError
    from harness.kernel.build import KernelBuilder, KernelRequest

    src_dir, _ = fake_kernel
    monkeypatch.setattr(BuildCache, "disk_free_gib", lambda self: 1.0)
    builder = KernelBuilder(BuildCache(tmp_path / "cache"))
    with pytest.raises(HarnessError, match=r"only 1\.0 GiB free .*a kernel build"):
        builder.build(KernelRequest(arch="x86_64", source=str(src_dir), series=()))


def test_a_tarball_that_is_not_a_kernel_leaves_nothing_behind(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    t = make_tarball(tmp_path, {"README": "not a kernel"})
    with pytest.raises(InputError, match="does not look like a kernel source tarball"):
        source.pristine_repo(source.resolve(str(t), cache), cache)
    assert not any((tmp_path / "cache" / "sources").iterdir())


def test_a_cache_lock_wait_names_the_holder(tmp_path):
    """A second process waiting for a cache lock says so, with the holder's pid, then gets it once
    the holder lets go (a handshake, not a sleep: the holder holds until told)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom pathlib import Path\nfrom harness.kernel.cache import BuildCache\n"
        f"with BuildCache(Path({str(tmp_path)!r})).lock('tree-x'):\n"
        "    print('held', flush=True); sys.stdin.readline()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen([sys.executable, "-c", (
        "from pathlib import Path\nfrom harness.kernel.cache import BuildCache\n"
        f"with BuildCache(Path({str(tmp_path)!r})).lock('tree-x'):\n    print('got it', flush=True)\n")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = waiter.stderr.readline()
        assert f"waiting for the cache lock tree-x (held by pid {holder.pid})" in said
        assert waiter.poll() is None                     # still waiting while the holder holds
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert waiter.stdout.readline().strip() == "got it"
    finally:
        holder.kill()
        waiter.kill()
        holder.communicate()
        waiter.communicate()
