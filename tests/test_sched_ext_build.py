"""The kernel build's sched_ext step on a fake tree: with CONFIG_SCHED_CLASS_EXT the build runs
tools/sched_ext's make against its own vmlinux with clang-16 and keeps the schedulers; for arm64
they are linked statically and refused unless they are static aarch64 executables (the real build
is `nox -s build-kernel` on an experiment with the sched-ext fragment)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel import arch as archmod
from harness.kernel import build
from harness.kernel.build import KernelBuilder, KernelRequest
from harness.kernel.cache import BuildCache

FAKE_MAKEFILE = """\
all:
\t@echo never
# what the harness's makes asked for: the host's bpftool, the target's libbpf, the schedulers
%/build/sbin/bpftool:
\t@mkdir -p $(@D)
\t@echo "ARCH=$(ARCH) CROSS_COMPILE=$(CROSS_COMPILE)" > $@
%/build/obj/libbpf/libbpf.a:
\t@mkdir -p $(@D)
\t@echo "ARCH=$(ARCH) CROSS_COMPILE=$(CROSS_COMPILE) BPFTOOL=$(BPFTOOL) LDFLAGS=$(LDFLAGS)" > $@
$(SCHEDS):
\t@mkdir -p $(O)/build/bin
\t@echo "ARCH=$(ARCH) CROSS_COMPILE=$(CROSS_COMPILE) BPFTOOL=$(BPFTOOL) HOST_BPFOBJ=$(HOST_BPFOBJ) \\
LDFLAGS=$(LDFLAGS)" > $(O)/build/$@.args
ifeq ($(ARCH),)
\t@echo "$(CLANG) $(VMLINUX_BTF)" > $(O)/build/bin/$@
else
\t@cp $(LOADER) $(O)/build/bin/$@
endif
.PHONY: $(SCHEDS)
"""


def _elf(machine: int = build.ELF_MACHINES["arm64"], phdrs: tuple[int, ...] = (1, 1), etype: int = 2) -> bytes:
    """A minimal ELF64 LE header with program headers of the given types (PT_LOAD 1, PT_INTERP 3)."""
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    head[16:18], head[18:20] = etype.to_bytes(2, "little"), machine.to_bytes(2, "little")
    head[32:40], head[54:56], head[56:58] = (64).to_bytes(8, "little"), (56).to_bytes(2, "little"), \
        len(phdrs).to_bytes(2, "little")
    return bytes(head) + b"".join(t.to_bytes(4, "little") + bytes(52) for t in phdrs)


def _tree(tmp_path: Path, config: str, loader: bytes = b"") -> tuple[Path, Path]:
    """A tree whose tools/sched_ext Makefile is FAKE_MAKEFILE; an arm64 make leaves `loader` as
    every scheduler."""
    tree, objdir = tmp_path / "tree", tmp_path / "objs"
    (tree / "tools" / "sched_ext").mkdir(parents=True)
    (tmp_path / "loader").write_bytes(loader)
    (tree / "tools" / "sched_ext" / "Makefile").write_text(
        f"SCHEDS := {' '.join(build.SCHED_EXT_SCHEDULERS)}\nLOADER := {tmp_path / 'loader'}\n" + FAKE_MAKEFILE)
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
    # x86_64's one make, as before arm64's static build (no ARCH, CROSS_COMPILE or LDFLAGS)
    assert _commands(log) == [["make", "-C", str(tree / "tools" / "sched_ext"), f"O={objdir / 'sched_ext'}",
                               f"CLANG={shutil.which(build.SCHED_EXT_CLANG)}", f"VMLINUX_BTF={objdir / 'vmlinux'}",
                               "-j1", *build.SCHED_EXT_SCHEDULERS]]
    assert "linked" not in meta
    res = build.BuildResult(_req(), "k", out, False, 0.0, {"artifacts": {"sched_ext": build.SCHED_EXT_DIR}})
    assert res.sched_ext("scx_simple") == out / "sched_ext" / "scx_simple"
    assert build.BuildResult(_req(), "k", out, False, 0.0, {"artifacts": {}}).sched_ext("scx_simple") is None


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_without_the_option_nothing_is_built(tmp_path, arch):
    tree, objdir = _tree(tmp_path, "CONFIG_BPF_SYSCALL=y\n# CONFIG_SCHED_CLASS_EXT is not set\n")
    b = KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)
    assert b._sched_ext(_req(arch), tree, objdir, tmp_path, tmp_path / "log") is None
    assert not (objdir / "sched_ext").exists() and not (tmp_path / build.SCHED_EXT_DIR).exists()


def _commands(log: Path) -> list[list[str]]:
    return [ln[2:].split(" ") for ln in log.read_text().splitlines() if ln.startswith("$ make ")]


def _static_ldflags() -> str:
    return "LDFLAGS=" + " ".join(build.SCHED_EXT_STATIC_LDFLAGS)


@pytest.mark.skipif(shutil.which(build.SCHED_EXT_CLANG) is None, reason="clang-16 (scripts/setup.sh) missing")
def test_arm64_loaders_are_built_static_with_the_targets_libbpf_and_the_hosts_bpftool(tmp_path):
    loader = _elf()
    tree, objdir = _tree(tmp_path, "CONFIG_BPF_SYSCALL=y\nCONFIG_SCHED_CLASS_EXT=y\n", loader)
    out, log = tmp_path / "out", tmp_path / "build.log"
    out.mkdir()
    log.write_text("")
    meta = KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)._sched_ext(_req("arm64"), tree, objdir, out, log)
    assert meta["schedulers"] == list(build.SCHED_EXT_SCHEDULERS) and meta["linked"] == "static"
    for name in build.SCHED_EXT_SCHEDULERS:
        assert (out / build.SCHED_EXT_DIR / name).read_bytes() == loader
    prefix = archmod.get("arm64").compile_prefix   # aarch64-linux-gnu- on an x86_64 host
    cross = f"CROSS_COMPILE={prefix}"
    host, scx = objdir / "sched_ext-host", objdir / "sched_ext"
    bpftool, libbpf = host / "build" / "sbin" / "bpftool", scx / "build" / "obj" / "libbpf" / "libbpf.a"
    first, second, third = _commands(log)
    # the host's bpftool: no ARCH, no CROSS_COMPILE, its own O= (not the tree's host-tools/)
    assert f"O={host}" in first and first[-1] == str(bpftool)
    assert not any(a.startswith(("ARCH=", "CROSS_COMPILE=", "LDFLAGS=")) for a in first)
    assert bpftool.read_text().split() == ["ARCH=", "CROSS_COMPILE="]
    # the target's libbpf, with no -static (its libbpf.so cannot link that way)
    assert {f"O={scx}", "ARCH=arm64", f"BPFTOOL={bpftool}"} <= set(second) and second[-1] == str(libbpf)
    assert not any(a.startswith("LDFLAGS=") for a in second)
    assert libbpf.read_text().split() == (["ARCH=arm64", cross] if prefix else ["ARCH=arm64", "CROSS_COMPILE="]) + [
        f"BPFTOOL={bpftool}", "LDFLAGS="]
    # the schedulers: linked against that libbpf (named as HOST_BPFOBJ, what 6.12 links), statically
    assert {f"O={scx}", "ARCH=arm64", f"BPFTOOL={bpftool}", f"HOST_BPFOBJ={libbpf}"} <= set(third)
    assert third[-len(build.SCHED_EXT_SCHEDULERS):] == list(build.SCHED_EXT_SCHEDULERS)
    seen = (scx / "build" / "scx_simple.args").read_text()
    assert f"HOST_BPFOBJ={libbpf}" in seen and _static_ldflags() in seen and f"ARCH=arm64 {cross}" in seen
    assert cross not in first and (cross in second) is bool(prefix)


def test_an_arm64_host_builds_the_same_steps_without_cross_compiling(monkeypatch, tmp_path):
    monkeypatch.setattr(archmod.platform, "machine", lambda: "aarch64")
    make = ["make", "-C", "/t/tools/sched_ext", "CLANG=/usr/bin/clang-16", "VMLINUX_BTF=/o/vmlinux", "-j2"]
    cmds = build.sched_ext_static_commands(archmod.get("arm64"), make, tmp_path / "scx", tmp_path / "host")
    assert len(cmds) == 3 and not any(a.startswith("CROSS_COMPILE=") for c in cmds for a in c)
    assert "ARCH=arm64" in cmds[2] and _static_ldflags() in cmds[2]


@pytest.mark.skipif(shutil.which(build.SCHED_EXT_CLANG) is None, reason="clang-16 (scripts/setup.sh) missing")
@pytest.mark.parametrize("loader, what", [
    (_elf(phdrs=(6, 3, 1)), "dynamically linked"),
    (_elf(machine=build.ELF_MACHINES["x86_64"]), "built for x86_64"),
    (_elf(etype=1), "ELF type 1"),
    (b"#!/bin/sh\n", "not an ELF file"),
    (b"", "not an ELF file"),
])
def test_an_arm64_loader_that_is_not_a_static_aarch64_executable_is_refused(tmp_path, loader, what):
    tree, objdir = _tree(tmp_path, "CONFIG_SCHED_CLASS_EXT=y\n", loader)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(HarnessError, match="not a statically linked arm64 executable") as e:
        KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)._sched_ext(_req("arm64"), tree, objdir, out,
                                                                          tmp_path / "log")
    assert str(objdir / "sched_ext" / "build" / "bin" / "scx_simple") in str(e.value) and what in str(e.value)


_CROSS_GCC = "aarch64-linux-gnu-gcc"


@pytest.mark.skipif(shutil.which(_CROSS_GCC) is None or not Path("/usr/lib/aarch64-linux-gnu/libelf.a").is_file(),
                    reason="the arm64 cross compiler and libelf-dev:arm64 (scripts/setup.sh) missing")
def test_real_cross_linked_binaries_are_told_apart(tmp_path):
    """What the check sees in binaries the cross toolchain links: static with libelf passes, the
    same program linked dynamically does not."""
    src = tmp_path / "t.c"
    src.write_text("#include <libelf.h>\nint main(void) { return elf_version(EV_CURRENT) == EV_NONE; }\n")
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    subprocess.run([_CROSS_GCC, str(src), "-o", str(static), *build.SCHED_EXT_STATIC_LDFLAGS], check=True)
    subprocess.run([_CROSS_GCC, str(src), "-o", str(dynamic), "-lelf"], check=True)
    build.check_static_elf(static, "arm64", "arm64/agent-off")
    with pytest.raises(HarnessError, match=f"{dynamic} is not a statically linked arm64 executable"):
        build.check_static_elf(dynamic, "arm64", "arm64/agent-off")
    with pytest.raises(HarnessError, match="left no missing"):
        build.check_static_elf(tmp_path / "missing", "arm64", "arm64/agent-off")


def test_a_missing_clang_is_named(tmp_path, monkeypatch):
    tree, objdir = _tree(tmp_path, "CONFIG_SCHED_CLASS_EXT=y\n")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(HarnessError, match="clang-16"):
        KernelBuilder(BuildCache(tmp_path / "cache"), jobs=1)._sched_ext(_req(), tree, objdir, tmp_path,
                                                                          tmp_path / "log")
