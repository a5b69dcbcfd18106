"""Build a kernel for one request, or return the cached build at once.

A request (source, patch series, config fragments, arch) first maps to a *request key*
computed without touching the tree; a hit in the index returns in well under a second.
On a miss: pristine source -> patched worktree (`git am`) -> allnoconfig + fragments
(merge_config.sh) + olddefconfig -> every requested symbol checked -> *build key* from the
final .config -> make with ccache in a reused O= directory -> artifacts + metadata.json.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths, procs
from harness.errors import HarnessError, InputError
from harness.kernel import arch as archmod
from harness.kernel import kconfig, series, source, toolchain
from harness.kernel.cache import BuildCache, atomic_write_text, sha256_bytes, sha256_json
from harness.kernel.progress import BuildProgress
from harness.spec.model import KernelSpec, SchedExt

RECIPE_VERSION = 1   # bump when the build recipe (make flags, base config) changes
SCHED_EXT_CLANG = "clang-16"          # tools/sched_ext wants clang >= 16 for its BPF objects
SCHED_EXT_DIR = "sched_ext"           # builds/<key>/sched_ext/<scheduler>
SCHED_EXT_SCHEDULERS = typing.get_args(SchedExt)
# arm64's loaders, linked statically (the guest's root filesystem has no libelf): libelf.a needs zlib
# and zstd (Debian's arm64 libelf-dev, zlib1g-dev and libzstd-dev: scripts/setup.sh)
SCHED_EXT_STATIC_LDFLAGS = ("-static", "-lelf", "-lz", "-lzstd", "-lpthread")
MIN_FREE_GIB = float(os.environ.get("HARNESS_MIN_FREE_GIB", "12"))


class ConfigError(InputError):
    """A config fragment asked for something Kconfig did not keep."""


@dataclass(frozen=True)
class KernelRequest:
    """Everything that decides which kernel gets built."""

    arch: str
    source: str = "debian"
    series: tuple[str, ...] = tuple(KernelSpec().series)
    fragments: tuple[str, ...] = tuple(KernelSpec().fragments)
    agent_latency: bool = False
    debug: bool = False
    extra: tuple[tuple[str, str], ...] = ()
    base_dir: Path | None = field(default=None, compare=False)  # for relative source paths

    @classmethod
    def from_spec(cls, spec: KernelSpec, arch: str, base_dir: Path | None = None) -> KernelRequest:
        return cls(arch=arch, source=spec.source, series=tuple(spec.series), fragments=tuple(spec.fragments),
                   agent_latency=spec.agent_latency, debug=spec.debug,
                   extra=tuple(sorted(spec.config.items())), base_dir=base_dir)

    @property
    def variant(self) -> str:
        return ("agent-on" if self.agent_latency else "agent-off") + ("+debug" if self.debug else "")

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.variant}"

    def fragment_files(self) -> list[Path]:
        """Fragments in merge order: experiment's, arch, agent-latency on/off, debug."""
        names = [*self.fragments, archmod.get(self.arch).fragment,
                 "agent-latency-on" if self.agent_latency else "agent-latency-off"]
        if self.debug:
            names.append("debug")
        files = [paths.CONFIGS_DIR / f"{n}.config" for n in names]
        for f in files:
            if not f.is_file():
                raise InputError(f"config fragment {f} does not exist")
        return files

    def requests(self) -> list[kconfig.Request]:
        reqs = []
        for f in self.fragment_files():
            reqs += kconfig.parse_fragment(f.read_text(), f"kernel/configs/{f.name}")
        for sym, val in self.extra:
            reqs.append(kconfig.Request(sym.removeprefix("CONFIG_"), val, "experiment kernel.config"))
        return reqs


@dataclass(frozen=True)
class BuildResult:
    request: KernelRequest
    key: str
    dir: Path
    cached: bool
    seconds: float
    metadata: dict

    @property
    def image(self) -> Path:
        return self.dir / self.metadata["artifacts"]["image"]

    @property
    def vmlinux(self) -> Path:
        return self.dir / self.metadata["artifacts"]["vmlinux"]

    def sched_ext(self, name: str) -> Path | None:
        """A tools/sched_ext scheduler built with this kernel (None: the kernel has no sched_ext)."""
        d = self.metadata["artifacts"].get("sched_ext")
        return self.dir / d / name if d is not None and (self.dir / d / name).is_file() else None

    @property
    def config(self) -> Path:
        return self.dir / "config"


def make_command(arch: archmod.KernelArch, tree: Path, objdir: Path, cc: str | None = None) -> list[str]:
    """`make` for `arch` in `tree` with objects in `objdir`, through ccache when there is one (the
    one owner of the cross-compile and compiler flags: the builder and scripts/config_matrix.py)."""
    cc = cc or arch.compiler()
    args = ["make", "-C", str(tree), f"O={objdir}", f"ARCH={arch.kbuild_arch}"]
    if arch.compile_prefix:
        args.append(f"CROSS_COMPILE={arch.compile_prefix}")
    if shutil.which("ccache"):
        args += [f"CC=ccache {cc}", "HOSTCC=ccache gcc"]
    return args


def make_env(cache: BuildCache) -> dict[str, str]:
    """The environment every kernel make runs in: the cache's ccache (what the workflow caches),
    unless the caller chose one, and a reproducible build stamp."""
    return {**os.environ, "CCACHE_DIR": os.environ.get("CCACHE_DIR") or str(cache.dir("ccache")),
            "CCACHE_BASEDIR": str(cache.root),
            "CCACHE_NOHASHDIR": "1", "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "15G"),
            "KBUILD_BUILD_TIMESTAMP": "Sun Nov 17 00:00:00 UTC 2024", "KBUILD_BUILD_USER": "harness",
            "KBUILD_BUILD_HOST": "agent-latency", "LC_ALL": "C"}


class KernelBuilder:
    def __init__(self, cache: BuildCache | None = None, jobs: int | None = None, console=None):
        self.cache = cache or BuildCache()
        self.jobs = jobs or os.cpu_count() or 1
        self.console = console

    # -- keys ------------------------------------------------------------------------------
    def request_key(self, req: KernelRequest) -> tuple[str, source.KernelSource, list[series.Patch]]:
        src = source.resolve(req.source, self.cache, req.base_dir)
        patches = series.load_series(list(req.series))
        arch = archmod.get(req.arch)
        key = sha256_json({
            "recipe": RECIPE_VERSION, "source": src.identity, "arch": req.arch,
            "patches": [[p.name, p.sha256] for p in patches],
            "fragments": [[f.name, sha256_bytes(f.read_bytes())] for f in req.fragment_files()],
            "extra": list(req.extra), "toolchain": toolchain.identity(arch),
        })[:24]
        return key, src, patches

    # -- the build ---------------------------------------------------------------------------
    def build(self, req: KernelRequest) -> BuildResult:
        t0 = time.monotonic()
        req_key, src, patches = self.request_key(req)
        if (d := self.cache.lookup(req_key)) is not None:   # a hit: no tree, no make
            meta = json.loads((d / "metadata.json").read_text())
            return BuildResult(req, meta["key"], d, True, time.monotonic() - t0, meta)

        arch = archmod.get(req.arch)
        cc = arch.compiler()
        self.cache.require_free(MIN_FREE_GIB, "a kernel build (source tree, objects, debug info; "
                                "HARNESS_MIN_FREE_GIB sets the figure)")
        started = dt.datetime.now(dt.UTC)
        objdir = self.cache.dir("objs") / f"{src.short_id}-{req.arch}"

        with self.checked_out(src, patches) as tree:
            config = self.configure(req, tree, objdir)
            toolchain_id = toolchain.identity(arch)
            build_key = sha256_json({
                "recipe": RECIPE_VERSION, "source": src.identity, "arch": req.arch,
                "patches": [p.sha256 for p in patches], "config": sha256_bytes(_config_body(config).encode()),
                "toolchain": toolchain_id,
            })[:24]
            out = self.cache.root / "builds" / build_key
            if not (out / "metadata.json").is_file():
                self._make(req, arch, cc, tree, objdir, out, build_key, {
                    "request_key": req_key, "source": {"kind": src.kind, "identity": src.identity,
                                                       "description": src.description},
                    "patches": [{"name": p.name, "sha256": p.sha256} for p in patches],
                    "fragments": [f"kernel/configs/{f.name}" for f in req.fragment_files()],
                    "extra_config": dict(req.extra), "toolchain": toolchain_id, "started": started.isoformat(),
                }, t0)
        self.cache.record(req_key, build_key)
        meta = json.loads((out / "metadata.json").read_text())
        return BuildResult(req, build_key, out, False, time.monotonic() - t0, meta)

    @contextlib.contextmanager
    def checked_out(self, src: source.KernelSource, patches: list[series.Patch]) -> Iterator[Path]:
        """The source's build tree with `patches` applied, locked for the caller's whole use."""
        pristine = source.pristine_repo(src, self.cache)
        with self.cache.lock(f"tree-{src.short_id}"):
            yield series.checkout_series(src, pristine, patches, self.cache)

    def tree_for(self, req: KernelRequest):
        """`checked_out` for a request: `with builder.tree_for(req) as tree: ...`."""
        _, src, patches = self.request_key(req)
        return self.checked_out(src, patches)

    def _env(self) -> dict[str, str]:
        return make_env(self.cache)

    def configure(self, req: KernelRequest, tree: Path, objdir: Path) -> Path:
        """allnoconfig + fragments + olddefconfig in `objdir`, then check every requested symbol."""
        arch = archmod.get(req.arch)
        make = make_command(arch, tree, objdir)
        objdir.mkdir(parents=True, exist_ok=True)
        self._run(make + ["allnoconfig"], "make allnoconfig")
        files = req.fragment_files()
        if req.extra:
            extra = objdir / "harness-extra.config"
            extra.write_text("".join(kconfig.Request(s.removeprefix("CONFIG_"), v, "").line() + "\n"
                                     for s, v in req.extra))
            files.append(extra)
        self._run([str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(objdir),
                   str(objdir / ".config"), *map(str, files)], "merge_config.sh", cwd=tree)
        self._run(make + ["olddefconfig"], "make olddefconfig")
        config = objdir / ".config"
        final = kconfig.read_config(config)
        if bad := kconfig.unmet(req.requests(), final):
            defs = kconfig.scan_kconfig(tree, arch.kbuild_arch)
            lines = "\n".join("  " + kconfig.explain(r, final, defs) for r in bad)
            raise ConfigError(f"{req.label}: Kconfig dropped {len(bad)} requested symbol(s):\n{lines}")
        return config

    def _run(self, cmd: list[str], what: str, cwd: Path | None = None) -> str:
        proc = procs.run_group(cmd, capture_output=True, text=True, env=self._env(), cwd=cwd)
        if proc.returncode != 0:
            raise HarnessError(f"{what} failed:\n{(proc.stdout + proc.stderr).strip()[-4000:]}")
        return proc.stdout

    def _make(self, req, arch, cc, tree, objdir, out, build_key, meta, t0) -> None:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = tmp / "build.log"
        cmd = make_command(arch, tree, objdir, cc) + [f"-j{self.jobs}", arch.image_target]
        with open(log_path, "w") as log, BuildProgress(req.label, _expected_objects(self.cache, req.arch),
                                                       console=self.console) as progress:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            progress.set_stage("compile")
            try:
                # make -j's compilers share its group: leaving the block any way (Ctrl-C, SIGTERM)
                # stops them all (SIGTERM: make deletes half-written targets; then SIGKILL).
                with procs.spawn_group(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=self._env(), bufsize=1) as proc:
                    for line in proc.stdout:
                        log.write(line)
                        progress.feed(line)
                    rc = proc.wait()
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            objects = progress.objects
        if rc != 0:
            failed = self.cache.dir("logs") / f"{req.arch}-{req.variant}-{build_key}.log"
            shutil.move(log_path, failed)
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(failed.read_text(errors="replace").splitlines()[-25:])
            raise HarnessError(f"kernel build {req.label} failed (make exit {rc}); full log: {failed}\n{tail}")
        release = self._run(make_command(arch, tree, objdir, cc) + ["-s", "kernelrelease"],
                            "make kernelrelease").strip()
        shutil.copy2(objdir / arch.image_path, tmp / arch.image_name)
        shutil.copy2(objdir / "vmlinux", tmp / "vmlinux")
        shutil.copy2(objdir / "System.map", tmp / "System.map")
        shutil.copy2(objdir / ".config", tmp / "config")
        sched_ext = self._sched_ext(req, tree, objdir, tmp, log_path)
        finished = dt.datetime.now(dt.UTC)
        meta.update({
            "key": build_key, "arch": req.arch, "variant": req.variant, "kernel_release": release,
            "finished": finished.isoformat(), "duration_s": round(time.monotonic() - t0, 1),
            "objects": objects, "host": {"machine": platform.machine(), "kernel": platform.release(),
                                         "cpus": os.cpu_count()},
            "artifacts": {"image": arch.image_name, "vmlinux": "vmlinux", "system_map": "System.map",
                          "config": "config", "log": "build.log",
                          **({"sched_ext": SCHED_EXT_DIR} if sched_ext else {})},
            **({"sched_ext": sched_ext} if sched_ext else {}),
        })
        atomic_write_text(tmp / "metadata.json", json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)


    def _sched_ext(self, req, tree: Path, objdir: Path, tmp: Path, log_path: Path) -> dict | None:
        """With CONFIG_SCHED_CLASS_EXT, the tools/sched_ext C schedulers built against this vmlinux's
        BTF into tmp/sched_ext/; the build's metadata names them and the clang that built their BPF
        part. x86_64: the loaders link the host's libelf, which the x86_64 guest, booted on the host's
        root, has. arm64: the guest boots a root filesystem without libelf, so the loaders are linked
        statically (Debian's arm64 libelf, zlib and zstd archives) and checked to be static aarch64
        executables. None without the option."""
        if kconfig.read_config(objdir / ".config").get("SCHED_CLASS_EXT") != "y":
            return None
        clang = shutil.which(SCHED_EXT_CLANG)
        if clang is None:
            raise HarnessError(f"{req.label}: CONFIG_SCHED_CLASS_EXT is on, and its schedulers' BPF part needs "
                               f"{SCHED_EXT_CLANG} (bash scripts/setup.sh installs it)")
        out = objdir / "sched_ext"
        out.mkdir(exist_ok=True)   # tools/scripts/Makefile.include wants O= to exist
        make = ["make", "-C", str(tree / "tools" / "sched_ext"), f"CLANG={clang}",
                f"VMLINUX_BTF={objdir / 'vmlinux'}", f"-j{self.jobs}"]
        if req.arch == "x86_64":
            self._sched_ext_make(req, [*make[:3], f"O={out}", *make[3:], *SCHED_EXT_SCHEDULERS], log_path)
        else:
            for cmd in sched_ext_static_commands(archmod.get(req.arch), make, out, objdir / "sched_ext-host"):
                self._sched_ext_make(req, cmd, log_path, hint=f" ({req.arch}'s loaders link statically with "
                                     f"Debian's {req.arch} libelf-dev, zlib1g-dev and libzstd-dev: bash "
                                     "scripts/setup.sh installs them)")
        (tmp / SCHED_EXT_DIR).mkdir()
        for name in SCHED_EXT_SCHEDULERS:
            built = out / "build" / "bin" / name
            if req.arch != "x86_64":
                check_static_elf(built, req.arch, req.label)
            shutil.copy2(built, tmp / SCHED_EXT_DIR / name)
        version = procs.run_group([clang, "--version"], capture_output=True, text=True).stdout.splitlines()
        return {"schedulers": list(SCHED_EXT_SCHEDULERS), "clang": version[0] if version else clang,
                **({"linked": "static"} if req.arch != "x86_64" else {})}

    def _sched_ext_make(self, req, cmd: list[str], log_path: Path, hint: str = "") -> None:
        proc = procs.run_group(cmd, capture_output=True, text=True, env=self._env())
        with open(log_path, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise HarnessError(f"{req.label}: building tools/sched_ext failed (make exit {proc.returncode}){hint}:"
                               f"\n{tail}")


def sched_ext_static_commands(arch: archmod.KernelArch, make: list[str], out: Path, host: Path) -> list[list[str]]:
    """The makes of tools/sched_ext for a guest without libelf (arm64), in order: bpftool for the
    host, in its own O= (`host`); libbpf for `arch`; the schedulers for `arch` with both, linked
    statically. 6.12's Makefile, cross-compiling, links the schedulers with HOST_BPFOBJ (the host's
    libbpf, built for bpftool) instead of the target's, and installs its host bpftool into the
    source tree (host-tools/): so the host bpftool, built beforehand, is named as BPFTOOL and the
    target's libbpf as HOST_BPFOBJ. libbpf gets its own make because LDFLAGS given to make reaches
    libbpf's make too, whose libbpf.so cannot link -static. The same steps on an arm64 host, where
    nothing is crossed."""
    host.mkdir(exist_ok=True)
    bpftool = host / "build" / "sbin" / "bpftool"
    libbpf = out / "build" / "obj" / "libbpf" / "libbpf.a"
    target = [f"O={out}", *make[3:], f"ARCH={arch.kbuild_arch}",
              *([f"CROSS_COMPILE={arch.compile_prefix}"] if arch.compile_prefix else []), f"BPFTOOL={bpftool}"]
    return [
        [*make[:3], f"O={host}", *make[3:], str(bpftool)],
        [*make[:3], *target, str(libbpf)],
        [*make[:3], *target, f"HOST_BPFOBJ={libbpf}", f"LDFLAGS={' '.join(SCHED_EXT_STATIC_LDFLAGS)}",
         *SCHED_EXT_SCHEDULERS],
    ]


ELF_MACHINES = {"x86_64": 62, "arm64": 183}   # e_machine: EM_X86_64, EM_AARCH64
_PT_INTERP = 3


def check_static_elf(path: Path, arch: str, label: str) -> None:
    """`path` is a 64-bit little-endian ELF executable for `arch` without an interpreter (a static
    binary, static-pie included: the kernel runs it with nothing from the guest's root filesystem),
    else a HarnessError that names the file and what it is instead."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"{label}: tools/sched_ext left no {path.name} ({path}: {e.strerror})") from None
    what = _elf_problem(data, ELF_MACHINES[arch])
    if what:
        raise HarnessError(f"{label}: {path} is not a statically linked {arch} executable ({what}): the "
                           f"{arch} guest's root filesystem has no libelf to load it with")


def _elf_problem(data: bytes, machine: int) -> str:
    """Why `data` is not a static ELF64 LE executable for e_machine `machine` ('' when it is)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return "not an ELF file"
    if data[4] != 2 or data[5] != 1:
        return "not a 64-bit little-endian ELF"
    e_type, e_machine = int.from_bytes(data[16:18], "little"), int.from_bytes(data[18:20], "little")
    if e_machine != machine:
        names = {v: k for k, v in ELF_MACHINES.items()}
        return f"built for {names.get(e_machine, f'e_machine {e_machine}')}"
    if e_type not in (2, 3):   # ET_EXEC, ET_DYN (static-pie)
        return f"ELF type {e_type}, not an executable"
    phoff = int.from_bytes(data[32:40], "little")
    phentsize, phnum = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    if phnum == 0 or phentsize < 56 or phoff + phnum * phentsize > len(data):
        return "no program headers"
    types = {int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") for i in range(phnum)}
    return "dynamically linked (it names an interpreter)" if _PT_INTERP in types else ""


def _config_body(config: Path) -> str:
    """The .config without its comment header (which names the tree path and date)."""
    return "\n".join(ln for ln in config.read_text().splitlines() if not ln.startswith("# ") or " is not set" in ln)


def _expected_objects(cache: BuildCache, arch: str) -> int | None:
    """Steps a previous build of this arch took, to show progress as n/total."""
    best = None
    for meta in (cache.root / "builds").glob("*/metadata.json") if (cache.root / "builds").is_dir() else []:
        try:
            m = json.loads(meta.read_text())
        except json.JSONDecodeError:
            continue
        if m.get("arch") == arch and m.get("objects", 0) > 100:
            best = max(best or 0, m["objects"])
    return best
