"""What a probe parser may know besides bpftrace's output: the platform before the probe attached
and the loop's own per-step timeline. Probes record kernel events; the loop knows which phase of
which step it was in. Joining the two (by CLOCK_MONOTONIC, which bpftrace's nsecs also is) is what
lets a tool say "this page-cache miss happened during the step's file phase"."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Phases of one step, in order: the world signals, the agent wakes (wake path), runs its
# memory/file/metadata phases, computes, then waits for the next signal.
PHASES = ("wake", "phases", "compute", "wait")
OUTSIDE = "outside"   # before the first measured step or after the last (start-up, warm-up, exit)


@dataclass(frozen=True)
class LoopTimeline:
    """The measured steps of every repeat, as the loop stamped them (ns, CLOCK_MONOTONIC)."""

    repeat: np.ndarray
    agent: np.ndarray
    signal_ns: np.ndarray
    wake_ns: np.ndarray
    phases_ns: np.ndarray
    done_ns: np.ndarray

    @classmethod
    def from_columns(cls, cols: dict[str, np.ndarray]) -> LoopTimeline:
        order = np.lexsort((cols["signal_ns"], cols["agent"]))
        return cls(*(np.asarray(cols[k])[order] for k in ("repeat", "agent", "signal_ns", "wake_ns",
                                                           "phases_ns", "done_ns")))

    def phase_at(self, ns: int, agent: int = 0) -> str:
        """The phase agent `agent` was in at `ns`. Between two steps of one repeat it waits; outside
        the measured steps (or between repeats) the time belongs to no step."""
        mine = np.flatnonzero(self.agent == agent)
        if not len(mine):
            return OUTSIDE
        i = int(np.searchsorted(self.signal_ns[mine], ns, side="right")) - 1
        if i < 0:
            return OUTSIDE
        k = mine[i]
        for name, end in zip(PHASES[:3], (self.wake_ns[k], self.phases_ns[k], self.done_ns[k]), strict=True):
            if ns < end:
                return name
        nxt = mine[i + 1] if i + 1 < len(mine) else None
        return "wait" if nxt is not None and self.repeat[nxt] == self.repeat[k] else OUTSIDE

    def wake_intervals(self) -> list[tuple[int, int]]:
        """(signal, running) of every measured step: the agent's wake path, in time order."""
        return sorted(zip(self.signal_ns.tolist(), self.wake_ns.tolist(), strict=True))


@dataclass(frozen=True)
class ProbeContext:
    cur_khz: dict[int, int] = field(default_factory=dict)   # cpu -> frequency before the probe attached
    loop: LoopTimeline | None = None
    files: dict[tuple[int, int], str] = field(default_factory=dict)   # (kernel dev_t, inode) -> path


def agent_of(comm: str, prefix: str = "agent-") -> int | None:
    """The loop names its threads "agent-N" / "world-N"."""
    if comm.startswith(prefix) and comm[len(prefix):].isdigit():
        return int(comm[len(prefix):])
    return None


NO_CONTEXT = ProbeContext()   # a parser run on bpftrace output alone (standalone use, golden tests)
