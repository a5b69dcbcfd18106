"""Build the patch series in the configurations a kernel build bot would try.

    python scripts/config_matrix.py TREE [--arch x86_64] [--arch arm64] [--only NAME] [--full]

TREE is a kernel tree with the series applied (`python -m harness kernel-tree TREE`). Each entry
starts from tinyconfig or defconfig, sets the listed symbols, and runs olddefconfig; the resolved
values of the symbols that matter are printed (AGENT_LATENCY drops out where its dependencies are
off, and that build then checks the series' stubs). tinyconfig entries build vmlinux; defconfig
entries build the objects the series touches (kernel/sched, kernel/sys.o, fs/exec.o,
drivers/cpuidle, drivers/cpufreq) unless --full. Warnings in those objects count as failures, as
they do for the bots (W=1 is not used: the base tree is not W=1 clean). Exit 1 if any entry fails.
Too slow for CI (the x86_64 tinyconfig entry took 290 s on 2 cores): `nox -s config-matrix`, and
the workflow's config-matrix job.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.kernel import arch as archmod  # noqa: E402
from harness.kernel.build import make_command, make_env  # noqa: E402
from harness.kernel.cache import BuildCache  # noqa: E402


@dataclass(frozen=True)
class Entry:
    name: str
    base: str                      # tinyconfig | defconfig
    symbols: tuple[str, ...]       # "SYM=y" / "SYM=n" / "SYM=val", applied in order


ON = ("CPU_FREQ=y", "CPU_FREQ_GOV_SCHEDUTIL=y", "CPU_IDLE=y", "SMP=y", "AGENT_LATENCY=y")

MATRIX = (
    Entry("tiny", "tinyconfig", ()),
    Entry("tiny-smp-idle", "tinyconfig", ("SMP=y", "CPU_IDLE=y")),
    Entry("tiny-agent", "tinyconfig", ("SMP=y", "CPU_IDLE=y", "CPU_FREQ=y", "CPU_FREQ_GOV_SCHEDUTIL=y",
                                       "AGENT_LATENCY=y")),
    Entry("def-agent-off", "defconfig", ("AGENT_LATENCY=n",)),
    Entry("def-agent", "defconfig", ON),
    Entry("def-no-cpufreq", "defconfig", (*ON, "CPU_FREQ=n")),
    Entry("def-no-cpuidle", "defconfig", (*ON, "CPU_IDLE=n")),
    Entry("def-no-cgroup-sched", "defconfig", (*ON, "CGROUP_SCHED=n", "FAIR_GROUP_SCHED=n")),
    Entry("def-no-cgroups", "defconfig", (*ON, "CGROUPS=n")),
    Entry("def-uclamp", "defconfig", (*ON, "UCLAMP_TASK=y", "UCLAMP_TASK_GROUP=y")),
    Entry("def-sched-ext", "defconfig", (*ON, "BPF_SYSCALL=y", "BPF_JIT=y", "DEBUG_INFO=y",
                                         "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y", "DEBUG_INFO_BTF=y",
                                         "SCHED_CLASS_EXT=y")),
    Entry("def-preempt-none", "defconfig", (*ON, "PREEMPT_NONE=y", "PREEMPT_VOLUNTARY=n", "PREEMPT=n")),
    Entry("def-preempt-full", "defconfig", (*ON, "PREEMPT=y", "PREEMPT_NONE=n", "PREEMPT_VOLUNTARY=n")),
    Entry("def-preempt-rt", "defconfig", (*ON, "EXPERT=y", "PREEMPT_RT=y")),
    Entry("def-no-jump-label", "defconfig", (*ON, "JUMP_LABEL=n")),
    Entry("def-kunit", "defconfig", (*ON, "KUNIT=y", "AGENT_LATENCY_KUNIT_TEST=y")),
)

SHOWN = ("AGENT_LATENCY", "AGENT_LATENCY_KUNIT_TEST", "CPU_FREQ", "CPU_IDLE", "SMP", "CGROUPS", "CGROUP_SCHED",
         "UCLAMP_TASK", "SCHED_CLASS_EXT", "PREEMPT", "PREEMPT_RT", "JUMP_LABEL")
OBJECTS = ("kernel/sched/", "kernel/sys.o", "fs/exec.o", "drivers/cpuidle/", "drivers/cpufreq/")
SERIES_FILES = re.compile(r"^(kernel/sched/|kernel/sys\.c|fs/exec\.c|drivers/cpuidle/|drivers/cpufreq/|"
                          r"include/linux/sched|include/trace/events/agent_latency)")


def make(tree: Path, out: Path, arch: archmod.KernelArch, *targets: str, log) -> subprocess.CompletedProcess:
    args = [*make_command(arch, tree, out), f"-j{os.cpu_count() or 2}", *targets]
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    return subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=make_env(BuildCache()), text=True)


def resolved(config: Path) -> dict[str, str]:
    vals = {}
    for ln in config.read_text().splitlines():
        if m := re.match(r"CONFIG_(\w+)=(.*)", ln):
            vals[m.group(1)] = m.group(2)
    return vals


def warnings_in_series(log_text: str) -> list[str]:
    return [ln for ln in log_text.splitlines()
            if re.search(r"(warning|error):", ln) and SERIES_FILES.search(ln.split(" ")[0].lstrip("./"))]


def run_entry(tree: Path, work: Path, arch_name: str, e: Entry, full: bool) -> tuple[bool, str]:
    arch = archmod.get(arch_name)
    out = work / f"{arch_name}-{e.name}"
    out.mkdir(parents=True, exist_ok=True)
    logp = out / "build.log"
    with open(logp, "w") as log:
        if make(tree, out, arch, e.base, log=log).returncode:
            return False, f"{e.base} failed (see {logp})"
        cmd = [str(tree / "scripts" / "config"), "--file", str(out / ".config")]
        for s in e.symbols:
            sym, val = s.split("=", 1)
            cmd += {"y": ["-e", sym], "n": ["-d", sym], "m": ["-m", sym]}.get(val, ["--set-val", sym, val])
        if e.symbols:
            subprocess.run(cmd, check=True)
        if make(tree, out, arch, "olddefconfig", log=log).returncode:
            return False, f"olddefconfig failed (see {logp})"
        vals = resolved(out / ".config")
        targets = ["vmlinux"] if full or e.base == "tinyconfig" else list(OBJECTS)
        t0 = time.monotonic()
        rc = make(tree, out, arch, *targets, log=log).returncode
    text = logp.read_text(errors="replace")
    warns = warnings_in_series(text)
    shown = " ".join(f"{s}={vals.get(s, 'n')}" for s in SHOWN)
    took = f"{time.monotonic() - t0:.0f}s"
    if rc:
        errs = [ln for ln in text.splitlines() if "error:" in ln][:5]
        return False, f"build failed ({took}): {'; '.join(errs) or logp}  [{shown}]"
    if warns:
        return False, f"{len(warns)} warning(s) in the series' files ({took}): {warns[0]}  [{shown}]"
    return True, f"ok ({took}, {' '.join(targets)})  [{shown}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--arch", action="append", choices=("x86_64", "arm64"))
    ap.add_argument("--only", action="append", help="entries whose name contains this")
    ap.add_argument("--full", action="store_true", help="build vmlinux for defconfig entries too")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "config-matrix")
    args = ap.parse_args()
    if not (args.tree / "kernel" / "Kconfig.agent_latency").is_file():
        print(f"{args.tree}: not a kernel tree with the agent-latency series "
              "(python -m harness kernel-tree TREE)", file=sys.stderr)
        return 2
    entries = [e for e in MATRIX if not args.only or any(o in e.name for o in args.only)]
    failed = 0
    for a in args.arch or ["x86_64", "arm64"]:
        for e in entries:
            ok, what = run_entry(args.tree.resolve(), args.work, a, e, args.full)
            failed += not ok
            print(f"{a:7} {e.name:22} {what}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
