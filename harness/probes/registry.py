"""The probe tools by name, and rendering of their bpftrace scripts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import jinja2

from harness.errors import InputError
from harness.probes import (
    agent_window,
    dvfs_ramp,
    idle_guard,
    pagecache,
    vfs_metadata,
    wake_path,
    wakeup_latency,
    workqueue_delay,
)

PROBES: dict[str, ModuleType] = {"wakeup_latency": wakeup_latency, "dvfs_ramp": dvfs_ramp,
                                 "workqueue_delay": workqueue_delay, "pagecache": pagecache,
                                 "vfs_metadata": vfs_metadata, "agent_window": agent_window, "wake_path": wake_path,
                                 "idle_guard": idle_guard}

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def get(name: str) -> ModuleType:
    try:
        return PROBES[name]
    except KeyError:
        raise InputError(f"probe {name!r} is not implemented yet (available: {', '.join(PROBES)})") from None


def outputs(name: str) -> tuple[str, ...]:
    """"events": one line per event, paired by the harness's parser (what the harness runs);
    "summary": in-kernel histograms and counts printed at exit, for long standalone runs."""
    return getattr(get(name), "OUTPUTS", ("events",))


def render(name: str, comm_prefix: str = "agent-", output: str = "events") -> str:
    """The standalone bpftrace script of a probe (run it with `bpftrace -f json SCRIPT`)."""
    if output not in outputs(name):
        raise InputError(f"probe {name!r} has no {output!r} output (it has: {', '.join(outputs(name))})")
    return _ENV.get_template(get(name).TEMPLATE).render(comm_prefix=comm_prefix, output=output)


def missing_symbols(names: list[str], system_map: Path) -> dict[str, list[str]]:
    """Kprobe targets of the named tools that the kernel does not have (checked before booting it:
    bpftrace would only say so from inside the guest). Tools on tracepoints only need nothing here."""
    wanted = {name: [t.split(":", 1)[1] for t in get(name).TRACEPOINTS if t.startswith(("kprobe:", "kretprobe:"))]
              for name in names}
    if not any(wanted.values()) or not system_map.is_file():
        return {}
    have = {line.split()[2] for line in system_map.read_text(errors="replace").splitlines() if line.count(" ") >= 2}
    return {name: miss for name, syms in wanted.items() if (miss := [s for s in syms if s not in have])}
