"""Turn a cell's platform knobs into what the guest needs: kernel command line, script lines
run before the loop, workload flags, and the list of knobs this harness cannot apply yet.

Knobs that act through cpufreq/cpuidle (governor, rate limit, C-state limits, the simulated
OPP/C-state tables) need the simulated platform driver, which a later series adds. Until then
they are reported as pending in the cell's result and on the console, never silently dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from harness.spec.model import PlatformSpec

_DEFAULTS = PlatformSpec()


@dataclass
class PlatformPlan:
    cmdline: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)          # shell lines run in the guest script
    workload_args: list[str] = field(default_factory=list)
    applied: dict[str, object] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


def plan(spec: PlatformSpec, arch: str) -> PlatformPlan:
    p = PlatformPlan()
    if spec.idle_poll:
        p.cmdline.append("idle=poll" if arch == "x86_64" else "nohlt")
        p.applied["idle_poll"] = p.cmdline[-1]
    if spec.pm_qos_latency_us is not None:
        # /dev/cpu_dma_latency takes a binary s32; the request holds while the fd is open, so
        # the script opens it on fd 3 and keeps it for the rest of its life (the loop included).
        octal = "".join(f"\\{b:03o}" for b in struct.pack("<i", spec.pm_qos_latency_us))
        # (a failed `exec` redirection would end the whole script, so test the device first)
        p.setup.append(f"[ -w /dev/cpu_dma_latency ] && exec 3>/dev/cpu_dma_latency && printf '{octal}' >&3")
        p.applied["pm_qos_latency_us"] = spec.pm_qos_latency_us
    if spec.uclamp_min is not None:
        p.workload_args += ["--uclamp-min", str(spec.uclamp_min)]
        p.applied["uclamp_min"] = spec.uclamp_min
    for name in ("governor", "userspace_khz", "rate_limit_us", "idle_governor", "max_cstate", "disabled_cstates",
                 "sim"):
        if name in spec.model_fields_set or getattr(spec, name) != getattr(_DEFAULTS, name):
            p.pending.append(name)
    return p
