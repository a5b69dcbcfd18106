"""bpftrace `-f json` output: one JSON object per line ({"type": "attached_probes" | "printf" | ...})."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Printed once every probe is attached when this variable is set in bpftrace's environment (the
# bpftrace runtime tests' hook; 0.17 writes it to stderr, later releases to stdout). The guest
# script starts the loop only after it: `attached_probes` comes before the probes are attached.
ATTACHED_NOTICE = "__BPFTRACE_NOTIFY_PROBES_ATTACHED"


class ProbeOutputError(ValueError):
    pass


@dataclass
class BpftraceOutput:
    attached: int | None = None
    all_attached: bool = False      # the notice was seen (on stdout: bpftrace after 0.17)
    printf: list[str] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)


def parse(text: str, origin: str = "bpftrace output") -> BpftraceOutput:
    out = BpftraceOutput()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.strip() == ATTACHED_NOTICE:
            out.all_attached = True
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ProbeOutputError(f"{origin}:{n}: not JSON: {e}") from None
        except (RecursionError, ValueError):   # nested too deep; a number past every bound
            raise ProbeOutputError(f"{origin}:{n}: not a bpftrace JSON line") from None
        if not isinstance(obj, dict):
            raise ProbeOutputError(f"{origin}:{n}: not a bpftrace JSON object")
        kind = obj.get("type")
        if kind == "attached_probes":
            try:
                out.attached = int(obj["data"]["probes"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise ProbeOutputError(f"{origin}:{n}: attached_probes without a probe count") from None
        elif kind == "printf":
            out.printf.extend(ln for ln in str(obj["data"]).splitlines() if ln.strip())
        else:
            out.other.append(obj)
    return out


def read(path: Path) -> BpftraceOutput:
    """A host file of bpftrace output (standalone use, golden tests); the runner reads the guest's
    through harness.guest.share and calls `parse`."""
    return parse(path.read_text(errors="replace"), str(path))
