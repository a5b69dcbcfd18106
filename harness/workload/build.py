"""Build the guest's programs as static binaries for an arch, once per (source, compiler): the
agent loop (agentloop.c) and the agent-latency series' kselftest (from its patch)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError
from harness.kernel import arch as archmod
from harness.kernel import series, source, toolchain
from harness.kernel.cache import BuildCache, sha256_bytes, sha256_json

SOURCE = Path(__file__).resolve().parent / "agentloop.c"
CFLAGS = ["-O2", "-static", "-pthread", "-Wall", "-Wextra", "-Werror"]


def workload_dir(cache: BuildCache, arch: str) -> Path:
    """A directory holding `agentloop` for `arch` (it is shared read-only with the guest)."""
    a = archmod.get(arch)
    key = sha256_json({"src": sha256_bytes(SOURCE.read_bytes()), "cflags": CFLAGS,
                       "cc": toolchain.identity(a)["gcc"]})[:16]
    out = cache.dir("workload") / f"{arch}-{key}"
    if (out / "agentloop").is_file():
        return out
    with cache.lock(f"workload-{arch}-{key}"):
        if not (out / "agentloop").is_file():
            _compile(a, out, arch)
    return out


def _compile(a: archmod.KernelArch, out: Path, arch: str) -> None:
    cc = a.compiler()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp / "agentloop"), str(SOURCE), "-lm"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = " (arm64 needs libc6-dev-arm64-cross: bash scripts/setup.sh)" if arch == "arm64" else ""
        raise HarnessError(f"building the workload for {arch} failed{hint}:\n{proc.stderr.strip()}")
    tmp.rename(out)


SELFTEST = "tools/testing/selftests/sched/agent_latency_test.c"
SELFTEST_HEADERS = ("tools/testing/selftests/kselftest_harness.h", "tools/testing/selftests/kselftest.h")


def added_file(patch: Path, path: str) -> str | None:
    """The content of a file a format-patch adds (one hunk, every line a '+'), or None."""
    lines, inside, hunk = [], False, False
    for ln in patch.read_text().split("\n"):   # not splitlines(): a form feed is text here
        if ln.startswith("diff --git "):
            inside, hunk = ln.endswith(f" b/{path}"), False
        elif inside and ln.startswith("@@ -0,0 "):
            hunk = True
        elif inside and hunk and ln.startswith("+"):
            lines.append(ln[1:])
        elif inside and hunk and ln.startswith("--"):
            break
    return "\n".join(lines) + "\n" if lines else None


def selftest_dir(cache: BuildCache, arch: str, kernel_source: str = "debian",
                 series_name: str = "agent-latency") -> Path:
    """A directory holding the series' `agent_latency_test` for `arch`: its source from the patch
    that adds it, kselftest's headers from the pristine kernel source (no patched tree needed)."""
    text = next((t for p in series.load_series([series_name]) if (t := added_file(p.path, SELFTEST))), None)
    if text is None:
        raise HarnessError(f"no patch of series {series_name} adds {SELFTEST}")
    repo = source.pristine_repo(source.resolve(kernel_source, cache), cache)
    headers = {h: source.git(repo, "show", f"base:{h}").stdout for h in SELFTEST_HEADERS}
    a = archmod.get(arch)
    key = sha256_json({"src": sha256_bytes(text.encode()), "headers": {h: sha256_bytes(t.encode())
                                                                       for h, t in headers.items()},
                       "cflags": SELFTEST_CFLAGS, "cc": toolchain.identity(a)["gcc"]})[:16]
    out = cache.dir("workload") / f"selftest-{arch}-{key}"
    if (out / "agent_latency_test").is_file():
        return out
    with cache.lock(f"selftest-{arch}-{key}"):
        if (out / "agent_latency_test").is_file():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, content in {SELFTEST: text, **headers}.items():
            (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "src" / rel).write_text(content)
        proc = subprocess.run([a.compiler(), *SELFTEST_CFLAGS, "-o", str(tmp / "agent_latency_test"),
                               str(tmp / "src" / SELFTEST)], capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise HarnessError(f"building {SELFTEST} for {arch} failed:\n{proc.stderr.strip()}")
        shutil.rmtree(tmp / "src")
        tmp.rename(out)
    return out


SELFTEST_CFLAGS = ["-O2", "-static", "-Wall", "-Werror"]   # as the selftests/sched Makefile (-Wall), kept clean
