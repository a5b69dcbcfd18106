"""Build the guest's programs as static binaries for an arch, once per (source, compiler): the
agent loop (agentloop.c) with the abuser that stands next to it (abuser.c), and the agent-latency
series' kselftest (from its patches)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.kernel import arch as archmod
from harness.kernel import series, source, toolchain
from harness.kernel.cache import BuildCache, sha256_bytes, sha256_json

SOURCE = Path(__file__).resolve().parent / "agentloop.c"
ABUSER_SOURCE = SOURCE.with_name("abuser.c")
CFLAGS = ["-O2", "-static", "-pthread", "-Wall", "-Wextra", "-Werror"]


def workload_name(arch: str) -> str:
    """The cached workload directory's name for `arch` (source and compiler), without compiling:
    cell fingerprints name the workload by it."""
    key = sha256_json({"src": sha256_bytes(SOURCE.read_bytes()), "abuser": sha256_bytes(ABUSER_SOURCE.read_bytes()),
                       "cflags": CFLAGS,
                       "cc": toolchain.identity(archmod.get(arch))["gcc"]})[:16]
    return f"{arch}-{key}"


def workload_dir(cache: BuildCache, arch: str) -> Path:
    """A directory holding `agentloop` and `abuser` for `arch` (shared read-only with the guest)."""
    return _cached_binary(cache, workload_name(arch), "agentloop", arch, "the workload",
                          lambda src: [("agentloop", [str(SOURCE), "-lm"], CFLAGS),
                                       ("abuser", [str(ABUSER_SOURCE)], CFLAGS)])


def _cached_binary(cache: BuildCache, name: str, binary: str, arch: str, what: str, sources) -> Path:
    """cache/workload/<name>/<binary>, compiled once under a lock: `sources(srcdir)` writes what
    the compile needs into srcdir (only on a miss) and returns [(binary, compiler arguments,
    cflags)]; `binary` is the last one written, whose presence means the directory is whole."""
    out = cache.dir("workload") / name
    if (out / binary).is_file():
        return out
    with cache.lock(f"workload-{name}"):
        if (out / binary).is_file():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "src").mkdir(parents=True)
        try:
            for name_, args, cflags in sources(tmp / "src"):
                proc = subprocess.run([archmod.get(arch).compiler(), *cflags, "-o", str(tmp / name_), *args],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    break
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            hint = " (arm64 needs libc6-dev-arm64-cross: bash scripts/setup.sh)" if arch == "arm64" else ""
            raise HarnessError(f"building {what} for {arch} failed{hint}:\n{proc.stderr.strip()}")
        shutil.rmtree(tmp / "src")
        tmp.rename(out)
    return out


SELFTEST = "tools/testing/selftests/sched/agent_latency_test.c"
SELFTEST_HEADERS = ("tools/testing/selftests/kselftest_harness.h", "tools/testing/selftests/kselftest.h")


def series_file(patches: list[Path], path: str) -> str | None:
    """The content of `path` after the whole series, from the patches alone (no kernel tree): the
    patch that adds it and every later one that changes it, applied in order with `git apply` to
    that one file in a scratch directory. None if no patch adds it."""
    touching = [p for p in patches if f" b/{path}\n" in p.read_text()]
    if not touching:
        return None
    with tempfile.TemporaryDirectory(prefix="series-file-") as d:
        for patch in touching:
            proc = subprocess.run(["git", "apply", f"--include={path}", str(patch)], cwd=d,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise HarnessError(f"{patch.name} does not apply to {path}: {proc.stderr.strip()}")
        f = Path(d) / path
        return f.read_text() if f.is_file() else None


def selftest_dir(cache: BuildCache, arch: str, kernel_source: str = "debian",
                 series_name: str = "agent-latency") -> Path:
    """A directory holding the series' `agent_latency_test` for `arch`: its source as the whole
    series leaves it, kselftest's headers from the pristine kernel source, read only when it is
    built (the key names the source by its identity, so a hit needs no unpacked tree)."""
    text = series_file([p.path for p in series.load_series([series_name])], SELFTEST)
    if text is None:
        raise HarnessError(f"no patch of series {series_name} adds {SELFTEST}")
    src = source.resolve(kernel_source, cache)
    key = sha256_json({"src": sha256_bytes(text.encode()), "kernel": src.identity, "cflags": SELFTEST_CFLAGS,
                       "cc": toolchain.identity(archmod.get(arch))["gcc"]})[:16]

    def sources(d: Path):
        repo = source.pristine_repo(src, cache)
        for rel in SELFTEST_HEADERS:
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(source.git(repo, "show", f"base:{rel}").stdout)
        (d / SELFTEST).parent.mkdir(parents=True, exist_ok=True)
        (d / SELFTEST).write_text(text)
        return [("agent_latency_test", [str(d / SELFTEST)], SELFTEST_CFLAGS)]

    return _cached_binary(cache, f"selftest-{arch}-{key}", "agent_latency_test", arch, SELFTEST, sources)


SELFTEST_CFLAGS = ["-O2", "-static", "-Wall", "-Werror"]   # as the selftests/sched Makefile (-Wall), kept clean
