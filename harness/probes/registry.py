"""The probe tools by name, and rendering of their bpftrace scripts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import jinja2

from harness.errors import InputError
from harness.probes import agent_window, dvfs_ramp, wakeup_latency

PROBES: dict[str, ModuleType] = {"wakeup_latency": wakeup_latency, "dvfs_ramp": dvfs_ramp,
                                 "agent_window": agent_window}

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def get(name: str) -> ModuleType:
    try:
        return PROBES[name]
    except KeyError:
        raise InputError(f"probe {name!r} is not implemented yet (available: {', '.join(PROBES)})") from None


def render(name: str, comm_prefix: str = "agent-") -> str:
    """The standalone bpftrace script of a probe (run it with `bpftrace -f json SCRIPT`)."""
    return _ENV.get_template(get(name).TEMPLATE).render(comm_prefix=comm_prefix)
