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
        BTF into tmp/sched_ext/ (x86_64: the loaders link the host's libelf, which the x86_64 guest,
        booted on the host's root, has); the build's metadata names them and the clang that built
        their BPF part. None without the option."""
        if kconfig.read_config(objdir / ".config").get("SCHED_CLASS_EXT") != "y" or req.arch != "x86_64":
            return None
        clang = shutil.which(SCHED_EXT_CLANG)
        if clang is None:
            raise HarnessError(f"{req.label}: CONFIG_SCHED_CLASS_EXT is on, and its schedulers' BPF part needs "
                               f"{SCHED_EXT_CLANG} (bash scripts/setup.sh installs it)")
        out = objdir / "sched_ext"
        out.mkdir(exist_ok=True)   # tools/scripts/Makefile.include wants O= to exist
        cmd = ["make", "-C", str(tree / "tools" / "sched_ext"), f"O={out}", f"CLANG={clang}",
               f"VMLINUX_BTF={objdir / 'vmlinux'}", f"-j{self.jobs}", *SCHED_EXT_SCHEDULERS]
        proc = procs.run_group(cmd, capture_output=True, text=True, env=self._env())
        with open(log_path, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise HarnessError(f"{req.label}: building tools/sched_ext failed (make exit {proc.returncode}):\n{tail}")
        (tmp / SCHED_EXT_DIR).mkdir()
        for name in SCHED_EXT_SCHEDULERS:
            shutil.copy2(out / "build" / "bin" / name, tmp / SCHED_EXT_DIR / name)
        version = procs.run_group([clang, "--version"], capture_output=True, text=True).stdout.splitlines()
        return {"schedulers": list(SCHED_EXT_SCHEDULERS), "clang": version[0] if version else clang}


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
