"""Tool 4: page-cache hits and misses of the agent threads, by file and by loop phase.

From the filemap tracepoints: pages looked up by read() (mm_filemap_get_pages) and by faults
(mm_filemap_fault), pages inserted (mm_filemap_add_to_page_cache: each one a miss, read from the
device) and evicted. Hits = lookups - misses, as bcc's cachestat reckons them, but per file and per
phase of the step the agent was in, so "the file phase misses 1 read in 4" is a direct reading.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from harness.probes.bpftrace_json import BpftraceOutput, ProbeOutputError
from harness.probes.context import NO_CONTEXT, OUTSIDE, ProbeContext, agent_of
from harness.probes.csvout import csv_text

TEMPLATE = "pagecache.bt.j2"
DESCRIPTION = "page-cache lookups, misses (pages read from the device) and evictions, by file and loop phase"
TRACEPOINTS = ("filemap:mm_filemap_get_pages", "filemap:mm_filemap_fault", "filemap:mm_filemap_add_to_page_cache",
               "filemap:mm_filemap_delete_from_page_cache")
OUTPUTS = ("events", "summary")
_KINDS = {"G": "lookup", "F": "fault", "A": "miss", "D": "evict"}


@dataclass(frozen=True)
class PageEvent:
    kind: str          # lookup | fault | miss | evict
    ns: int
    tid: int
    comm: str
    dev: int           # kernel dev_t (major << 20 | minor)
    ino: int
    index: int
    pages: int
    file: str          # path from the run's file index, else "dev:ino"
    phase: str         # loop phase of the thread at the time (context.PHASES, or "outside")


def _dev_name(dev: int) -> str:
    return f"{dev >> 20}:{dev & 0xFFFFF}"


def _ns(line: str) -> int:
    try:
        return int(line.split()[1])
    except (IndexError, ValueError):
        raise ProbeOutputError(f"pagecache: unexpected line {line!r}") from None


def records(out: BpftraceOutput, ctx: ProbeContext = NO_CONTEXT) -> list[PageEvent]:
    recs: list[PageEvent] = []
    last_read: dict[int, tuple[int, int, int, int]] = {}   # tid -> (dev, ino, index, last) of its last lookup
    for line in sorted(out.printf, key=_ns):   # one perf buffer per CPU: merge by time
        p = line.split()
        try:
            kind = _KINDS[p[0]]
            ns, tid = int(p[1]), int(p[2])
            comm = p[3]
            dev, ino, index = (int(x) for x in p[4:7])
            if kind == "lookup":
                last = int(p[7])
                pages = last - index + 1
                prev = last_read.get(tid)
                # filemap_read() reports each batch with the read's end: the batches after the first
                # re-report pages already counted
                if prev and prev[:2] == (dev, ino) and prev[3] == last and prev[2] < index:
                    pages = 0
                last_read[tid] = (dev, ino, index, last)
            elif kind == "fault":
                if len(p) != 7:
                    raise ValueError
                pages = 1
            else:
                pages = 1 << int(p[7])
            if kind != "fault" and len(p) != 8:
                raise ValueError
        except (KeyError, IndexError, ValueError):
            raise ProbeOutputError(f"pagecache: unexpected line {line!r}") from None
        agent = agent_of(comm)
        phase = ctx.loop.phase_at(ns, agent) if ctx.loop is not None and agent is not None else OUTSIDE
        recs.append(PageEvent(kind, ns, tid, comm, dev, ino, index, pages,
                              ctx.files.get((dev, ino), f"{_dev_name(dev)}:{ino}"), phase))
    return recs


def _ratios(lookups: int, faults: int, misses: int, evicted: int) -> dict:
    accesses = lookups + faults
    hits = max(0, accesses - misses)
    return {"lookups": lookups, "faults": faults, "misses": misses, "hits": hits, "evicted": evicted,
            "hit_ratio": hits / accesses if accesses else None,
            "miss_ratio": min(1.0, misses / accesses) if accesses else None}


def _tally(recs: list[PageEvent]) -> dict:
    n = defaultdict(int)
    for r in recs:
        n[r.kind] += r.pages
    return _ratios(n["lookup"], n["fault"], n["miss"], n["evict"])


def summary(recs: list[PageEvent], ctx: ProbeContext = NO_CONTEXT) -> dict:
    by_file, by_phase = defaultdict(list), defaultdict(list)
    for r in recs:
        by_file[r.file].append(r)
        by_phase[r.phase].append(r)
    return {"events": len(recs), **_tally(recs),
            "by_phase": {ph: _tally(v) for ph, v in sorted(by_phase.items())},
            "by_file": {f: _tally(v) for f, v in sorted(by_file.items(), key=lambda kv: -len(kv[1]))[:20]}}


def to_csv(recs: list[PageEvent]) -> str:
    return csv_text("kind,ns,tid,comm,dev,ino,index,pages,file,phase".split(","),
                    ((r.kind, r.ns, r.tid, r.comm, _dev_name(r.dev), r.ino, r.index, r.pages, r.file, r.phase)
                     for r in recs))
