"""Tool 5: VFS metadata slowpaths of the agent's stat()/open() calls (kprobes on fs/namei.c and
fs/dcache.c: filename_lookup, do_filp_open, path_lookupat, path_openat, lookup_fast,
__lookup_slow, try_to_unlazy, d_alloc_parallel).

One record per operation with its cost and the slow paths it took, so the loop's metadata phase
can be read as "N % of stats fell back to a ref walk, M % missed the dcache, and those cost X us".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, OUTSIDE, ProbeContext, agent_of
from harness.probes.csvout import csv_text

TEMPLATE = "vfs_metadata.bt.j2"
DESCRIPTION = "path lookup cost of stat/open, RCU-walk fallbacks, dcache misses, filesystem lookups"
TRACEPOINTS = ("kprobe:filename_lookup", "kprobe:do_filp_open", "kprobe:path_lookupat", "kprobe:path_openat",
               "kprobe:lookup_fast", "kprobe:__lookup_slow", "kretprobe:try_to_unlazy",
               "kprobe:d_alloc_parallel")
OUTPUTS = ("events", "summary")


@dataclass(frozen=True)
class Lookup:
    op: str            # stat | open
    tid: int
    comm: str
    start_ns: int
    end_ns: int
    failed: bool       # returned an error (ENOENT for a name that does not exist, ...)
    walks: int         # path walks: 1 = RCU walk sufficed; more = retried as ref walk / revalidated
    fast: int          # lookup_fast calls (one per path component looked up in the dcache)
    slow: int          # __lookup_slow: not in the dcache, the filesystem's ->lookup was asked
    unlazy: int        # try_to_unlazy: leaving RCU mode
    unlazy_failed: int
    dalloc: int        # d_alloc_parallel: dentries allocated (dcache misses)
    phase: str

    @property
    def cost_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def slowpath(self) -> bool:
        return self.walks > 1 or self.slow > 0 or self.dalloc > 0


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> list[Lookup]:
    recs = []
    for line in out.printf:
        p = line.split()
        try:
            if p[0] != "O" or p[1] not in ("stat", "open") or len(p) != 13:
                raise ValueError
            tid, (start, end, failed, *counts) = int(p[2]), (int(x) for x in p[4:])
        except (IndexError, ValueError):
            raise ProbeOutputError(f"vfs_metadata: unexpected line {line!r}") from None
        agent = agent_of(p[3])
        phase = ctx.loop.phase_at(start, agent) if ctx.loop is not None and agent is not None else OUTSIDE
        recs.append(Lookup(p[1], tid, p[3], start, end, bool(failed), *counts, phase))
    return sorted(recs, key=lambda r: r.start_ns)


def _stats(recs: list[Lookup]) -> dict:
    cost = np.array([r.cost_ns for r in recs], dtype=float) / 1000.0
    n = len(recs)
    out = {"ops": n, "failed": sum(r.failed for r in recs),
           "cost_p50_us": float(np.percentile(cost, 50)), "cost_p99_us": float(np.percentile(cost, 99)),
           "ref_walk_fraction": sum(r.walks > 1 for r in recs) / n,
           "dcache_miss_fraction": sum(r.slow > 0 or r.dalloc > 0 for r in recs) / n,
           "fs_lookup_fraction": sum(r.slow > 0 for r in recs) / n,
           "unlazy_failed": sum(r.unlazy_failed for r in recs), "dentries_allocated": sum(r.dalloc for r in recs)}
    fast = [r.cost_ns for r in recs if not r.slowpath]
    slow = [r.cost_ns for r in recs if r.slowpath]
    if fast:
        out["fastpath_cost_p50_us"] = float(np.percentile(fast, 50)) / 1000.0
    if slow:
        out["slowpath_cost_p50_us"] = float(np.percentile(slow, 50)) / 1000.0
    return out


def summary(recs: list[Lookup], ctx: ProbeContext = NO_CONTEXT) -> dict:
    if not recs:
        return {"ops": 0}
    by_op = defaultdict(list)
    for r in recs:
        by_op[r.op].append(r)
    return {**_stats(recs), "by_op": {op: _stats(v) for op, v in sorted(by_op.items())},
            "in_loop_phases": sum(r.phase == "phases" for r in recs)}


_CSV_FIELDS = ("op", "tid", "comm", "start_ns", "end_ns", "cost_ns", "failed", "walks", "fast", "slow",
               "unlazy", "unlazy_failed", "dalloc", "phase")


def to_csv(recs: list[Lookup]) -> str:
    return csv_text(_CSV_FIELDS, ((getattr(r, f) for f in _CSV_FIELDS) for r in recs))
