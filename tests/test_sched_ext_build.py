"""The kernel build's sched_ext step on a fake tree: with CONFIG_SCHED_CLASS_EXT the build runs
tools/sched_ext's make against its own vmlinux with clang-16 and keeps the schedulers (the real
build is `nox -s build-kernel` on an experiment with the sched-ext fragment)."""

import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel import build
from harness.kernel.build import KernelBuilder, KernelRequest
from harness.kernel.cache import BuildCache

FAKE_MAKEFILE = """\
all:
\t@echo never
$(SCHEDS):
\t@mkdir -p $(O)/build/bin
\t@echo "$(CLANG) $(VMLINUX_BTF)" > $(O)/build/bin/$@
.PHONY: $(SCHEDS)
"""


def _tree(tmp_path: Path, config: str) -> tuple[Path, Path]:
    tree, objdir = tmp_path / "tree", tmp_path / "objs"
    (tree / "tools" / "sched_ext").mkdir(parents=True)
    (tree / "tools" / "sched_ext" / "Makefile").write_text(
        f"SCHEDS := {' '.join(build.SCHED_EXT_SCHEDULERS)}\n" + FAKE_MAKEFILE)
    objdir.mkdir()
    (objdir / ".config").write_text(config)
    return tree, objdir


def _req(arch="x86_64"):
    return KernelRequest(source="debian", series=(), fragments=("base", "sched-ext"), arch=arch,
                         agent_latency=False)


@pytest.mark.skipif(shutil.which(build.SCHED_EXT_CLANG) is None, reason="clang-16 (scripts/setup.sh) missing")
def test_sched_ext_schedulers_are_built_against_the_kernels_own_vmlinux(tmp_path):
    tree, objdir = _tree(tmp_path, "CONFIG_BPF_SYSCALL=y\nCONFIG_SCHED_CLASS_EXT=y\n")
    out = tmp_path / "out"
    out.mkdir()
    log = out / "build.log"
    log.write_text("")
    meta = KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)._sched_ext(_req(), tree, objdir, out, log)
    assert meta["schedulers"] == list(build.SCHED_EXT_SCHEDULERS) and "clang" in meta["clang"]
    for name in build.SCHED_EXT_SCHEDULERS:
        clang, btf = (out / build.SCHED_EXT_DIR / name).read_text().split()
        assert clang == shutil.which(build.SCHED_EXT_CLANG) and btf == str(objdir / "vmlinux")
    assert "tools/sched_ext" in log.read_text()
    res = build.BuildResult(_req(), "k", out, False, 0.0, {"artifacts": {"sched_ext": build.SCHED_EXT_DIR}})
    assert res.sched_ext("scx_simple") == out / "sched_ext" / "scx_simple"
    assert build.BuildResult(_req(), "k", out, False, 0.0, {"artifacts": {}}).sched_ext("scx_simple") is None


def test_without_the_option_or_off_x86_64_nothing_is_built(tmp_path):
    tree, objdir = _tree(tmp_path, "CONFIG_BPF_SYSCALL=y\n")
    b = KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)
    assert b._sched_ext(_req(), tree, objdir, tmp_path, tmp_path / "log") is None
    (objdir / ".config").write_text("CONFIG_SCHED_CLASS_EXT=y\n")
    assert b._sched_ext(_req("arm64"), tree, objdir, tmp_path, tmp_path / "log") is None


def test_a_missing_clang_is_named(tmp_path, monkeypatch):
    tree, objdir = _tree(tmp_path, "CONFIG_SCHED_CLASS_EXT=y\n")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(HarnessError, match="clang-16"):
        KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)._sched_ext(_req(), tree, objdir, tmp_path,
                                                                          tmp_path / "log")
