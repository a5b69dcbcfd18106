"""A cell's platform knobs on a real target: its own cpufreq and cpuidle sysfs, no simulation.

A VM boots with the simulated platform's tables on its command line and every knob is written.
A real target runs the kernel it has, so only the knobs the experiment *sets* are written (and
read back by the guest script's `setall`; one that does not hold fails the cell, naming the file
and the value found); a knob left at its default leaves the target as it is, and the record says
what it ran (the host facts: cpufreq/cpuidle driver and governor). What needs the kernel command
line is emulated where the target allows it: `idle_poll` leaves only the POLL state enabled
(x86), and fails the cell where there is none. The simulated tables (`platform.sim`) are unused.
"""

from __future__ import annotations

from harness.guest import platform
from harness.guest.platform import CPU, PlatformPlan
from harness.spec.model import PlatformSpec


def plan(spec: PlatformSpec) -> PlatformPlan:
    given = spec.model_fields_set
    p = PlatformPlan()
    p.applied["platform"] = "real"
    policies = f"{CPU}/cpufreq/policy*"
    if "governor" in given or spec.governor == "userspace":
        p.setup.append(f"setall governor '{policies}/scaling_governor' {spec.governor}")
        p.applied["governor"] = spec.governor
    if spec.governor == "userspace":
        khz = spec.userspace_khz
        if isinstance(khz, str):   # min/mid/max name the simulated table's OPPs, not this target's
            p.setup.append(f"echo '{_mismatch()}=userspace_khz: {khz} names a simulated OPP; give kHz for a "
                           "real target' >> \"$S\" && false")
        else:
            p.setup.append(f"setall userspace_khz '{policies}/scaling_setspeed' {int(khz)}")
            p.applied["userspace_khz"] = khz
    if spec.rate_limit_us is not None:
        p.setup.append(f"setall rate_limit_us '{policies}/schedutil/rate_limit_us' {spec.rate_limit_us}")
        p.applied["rate_limit_us"] = spec.rate_limit_us
    if "idle_governor" in given:
        p.setup.append(f"setall idle_governor '{CPU}/cpuidle/current_governor' {spec.idle_governor}")
        p.applied["idle_governor"] = spec.idle_governor
    if spec.idle_poll:
        p.setup.append("cstate_poll")
        p.applied["idle_poll"] = "only POLL enabled (no kernel command line on a real target)"
    elif spec.max_cstate is not None:
        p.setup.append(f"cstate_max {spec.max_cstate} max_cstate")
        p.applied["max_cstate"] = spec.max_cstate
    if spec.only_cstate is not None and not spec.idle_poll:
        p.setup.append(f"echo '{_mismatch()}=only_cstate: not supported on a real target (use max_cstate)' "
                       ">> \"$S\" && false")
    for name in spec.disabled_cstates:
        p.setup.append(f"cstate {name} 1")
    if spec.disabled_cstates:
        p.applied["disabled_cstates"] = list(spec.disabled_cstates)
    platform.add_qos_and_uclamp(p, spec)
    return p


def _mismatch() -> str:
    from harness.guest.protocol import Key
    return Key.PLATFORM_MISMATCH
