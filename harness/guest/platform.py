"""Turn a cell's platform knobs into what the guest needs, and read back what it got.

The simulated platform (series sim-platform) takes its OPP and C-state tables and its timing from
the kernel command line. Governors, rate limit and C-state limits are sysfs writes in the guest
script, each read back before the loop starts: a knob that does not hold fails the cell with its
name, the file and the value found (the `setknob` helpers in run.sh.j2). The guest also snapshots
the platform's sysfs before and after every repeat; `read_snapshot` and `delta` turn two snapshots
into the cell's energy proxy and frequency / idle residency.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field

from harness.guest.share import excerpt
from harness.records import PlatformSummary
from harness.spec.model import PlatformSpec

CPU = "/sys/devices/system/cpu"
# The cgroups the harness makes in a guest: the agent's, below one of the harness's own (the
# abuser's is its sibling, harness/guest/neighbour.py)
CGROUP = "/sys/fs/cgroup"
HARNESS_CGROUP = f"{CGROUP}/harness"
SCHED_EXT = "/sys/kernel/sched_ext"
SCHED_EXT_FILES = (f"{SCHED_EXT}/state", f"{SCHED_EXT}/enable_seq", f"{SCHED_EXT}/root/ops")
# The counters a delta needs, which the loop itself reads at the edges of the measured steps
# (agentloop --meter) and the shell's snapshots grep too, with the settings besides.
METER_GLOBS = (f"{CPU}/sim_power/*", f"{CPU}/sim_power/cpu[0-9]*/*", f"{CPU}/cpufreq/policy*/stats/time_in_state",
               *(f"{CPU}/cpu[0-9]*/cpuidle/state*/{leaf}" for leaf in ("name", "latency", "usage", "time", "disable")))
AGENT_CGROUP = f"{HARNESS_CGROUP}/agent"


@dataclass
class PlatformPlan:
    cmdline: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)          # shell lines run in the guest script
    workload_args: list[str] = field(default_factory=list)
    applied: dict[str, object] = field(default_factory=dict)
    expected_cstates: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def cstate_names(spec: PlatformSpec, arch: str) -> list[str]:
    """The idle states the guest will show: POLL is the core's poll state, which arm64 has not."""
    return spec.cstates_on(arch)


def _state_power(power: float | str) -> str:
    """A state's power as the simulated cpuidle driver takes it: uW, `cg` or `active`."""
    if power == "clock-gated":
        return "cg"
    if power == "active":
        return "active"
    return str(max(1, round(float(power) * 1000)))


# What one steal interrupt (hrtimer entry and exit, the driver's own work) costs the task besides
# the spin, per guest arch under QEMU virtual time. The driver cannot see its own exit, so this is
# calibrated (experiments/sim_platform.yaml, opp-min cells): with 0 here, the lowest OPP is slower
# than fmax/fmin by b per chunk, and an unseen cost o is paid once and accrued as useful time at the
# rate fmax/f - 1, so b = o x fmax/f (measured: b = 5.25 us on x86_64, 7.5 on arm64 at fmax/5).
# Under KVM it is host-dependent: set platform.sim.steal_irq_ns.
STEAL_IRQ_NS = {"x86_64": 1050, "arm64": 1500}


def steal_irq_ns(spec: PlatformSpec, arch: str) -> int:
    return spec.sim.steal_irq_ns if spec.sim.steal_irq_ns is not None else STEAL_IRQ_NS.get(arch, 0)


def sim_cmdline(spec: PlatformSpec, arch: str = "x86_64") -> list[str]:
    """The simulated platform's parameters (sim-cpufreq, cpuidle-sim in kernel/patches/sim-platform)."""
    sim = spec.sim
    return [
        "sim_cpufreq.opps=" + ",".join(f"{o.khz}:{o.microvolt}" for o in sim.opps),
        f"sim_cpufreq.dyn_coeff={sim.dynamic_power_coefficient}",
        f"sim_cpufreq.leakage_ua={sim.leakage_ua}",
        f"sim_cpufreq.transition_latency_us={sim.transition_latency_us}",
        f"sim_cpufreq.steal_chunk_us={sim.steal_chunk_us}",
        f"sim_cpufreq.steal_irq_ns={steal_irq_ns(spec, arch)}",
        "cpuidle_sim.states=" + ",".join(f"{c.name}:{c.exit_latency_us}:{c.target_residency_us}:"
                                         f"{_state_power(c.power_mw)}" for c in sim.cstates),
    ]


def plan(spec: PlatformSpec, arch: str) -> PlatformPlan:
    p = PlatformPlan(cmdline=sim_cmdline(spec, arch), expected_cstates=cstate_names(spec, arch))
    p.applied["sim"] = spec.sim.model_dump(mode="json")
    if spec.idle_poll:
        p.cmdline.append("idle=poll" if arch == "x86_64" else "nohlt")
        p.applied["idle_poll"] = p.cmdline[-1]
    policies = f"{CPU}/cpufreq/policy*"
    p.setup.append(f"setall governor '{policies}/scaling_governor' {spec.governor}")
    p.applied["governor"] = spec.governor
    if spec.governor == "userspace":
        p.setup.append(f"setall userspace_khz '{policies}/scaling_setspeed' {spec.userspace_frequency()}")
        p.applied["userspace_khz"] = spec.userspace_frequency()
    if spec.rate_limit_us is not None:
        p.setup.append(f"setall rate_limit_us '{policies}/schedutil/rate_limit_us' {spec.rate_limit_us}")
        p.applied["rate_limit_us"] = spec.rate_limit_us
    p.setup.append(f"setall idle_governor '{CPU}/cpuidle/current_governor' {spec.idle_governor}")
    p.applied["idle_governor"] = spec.idle_governor
    off = spec.disabled_on(arch)
    for name in p.expected_cstates:   # every state written, so one left disabled by an earlier knob cannot linger
        p.setup.append(f"cstate {name} {1 if name in off else 0}")
    p.applied["disabled_cstates"] = off
    add_qos_and_uclamp(p, spec)
    if spec.sched_ext is not None:   # last: the knobs above are the kernel's, whichever class schedules
        p.setup.append(f"startscx {spec.sched_ext}")
        p.applied["sched_ext"] = spec.sched_ext
    return p


def sched_ext_ops_name(scheduler: str) -> str:
    """The ops name a tools/sched_ext scheduler registers (scx_simple -> simple), which
    /sys/kernel/sched_ext/root/ops shows while it runs."""
    return scheduler.removeprefix("scx_")


def sched_ext_held(spec: PlatformSpec, snaps: list[tuple[Snapshot, Snapshot]]) -> list[str]:
    """A sched_ext cell's scheduler ran through every repeat: enabled before and after each, and
    never re-enabled (enable_seq counts enables; the kernel falls back to the fair class when a
    BPF scheduler errors, its watchdog fires or its loader dies). [] when it held."""
    if spec.sched_ext is None or not snaps:
        return []
    want, seq = sched_ext_ops_name(spec.sched_ext), snaps[0][0].sched_ext_enable_seq
    for r, pair in enumerate(snaps):
        for when, snap in zip(("before", "after"), pair, strict=True):
            if snap.sched_ext_state != "enabled" or snap.sched_ext_ops != want or snap.sched_ext_enable_seq != seq:
                return [f"sched_ext {spec.sched_ext} did not hold {when} repeat {r}: state "
                        f"{snap.sched_ext_state or 'absent'!r}, ops {snap.sched_ext_ops or 'none'!r}, "
                        f"enable_seq {snap.sched_ext_enable_seq} (first {seq})"]
    return []


def cgroup_lines(*groups: str) -> list[str]:
    """cgroup v2 mounted, `groups` (below HARNESS_CGROUP) made, the cpu controller on down to them."""
    return [f"[ -e {CGROUP}/cgroup.controllers ] || mount -t cgroup2 none {CGROUP}",
            f"mkdir -p {' '.join(groups)}",
            f"echo +cpu > {CGROUP}/cgroup.subtree_control && echo +cpu > {HARNESS_CGROUP}/cgroup.subtree_control"]


def uclamp_percent(capacity: int) -> str:
    """cpu.uclamp.* take a percentage with two decimals; the kernel rounds it back to the same
    capacity (a capacity step is 9.8 hundredths of a percent) and prints it as written, but full
    capacity as "max" (cpu_uclamp_print()), so that is what is written for it."""
    if capacity == 1024:
        return "max"
    hundredths = round(capacity * 10000 / 1024)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def add_qos_and_uclamp(p: PlatformPlan, spec: PlatformSpec) -> None:
    """The PM QoS request and uclamp.min (the task's, or a cgroup's), the same on a VM and on a
    real target."""
    if spec.pm_qos_latency_us is not None:
        # /dev/cpu_dma_latency takes a binary s32; the request holds while the fd is open, so
        # the script opens it on fd 3 and keeps it for the rest of its life (the loop included).
        octal = "".join(f"\\{b:03o}" for b in struct.pack("<i", spec.pm_qos_latency_us))
        # (a failed `exec` redirection would end the whole script, so test the device first)
        p.setup.append(f"[ -w /dev/cpu_dma_latency ] && exec 3>/dev/cpu_dma_latency && printf '{octal}' >&3")
        p.setup.append(f"checkqos {spec.pm_qos_latency_us}")
        p.applied["pm_qos_latency_us"] = spec.pm_qos_latency_us
    if spec.uclamp_min is not None:
        p.workload_args += ["--uclamp-min", str(spec.uclamp_min)]
        p.applied["uclamp_min"] = spec.uclamp_min
    if spec.cgroup_uclamp_min is not None:
        # A group's uclamp.min is capped by its parent's, and a new group's is 0: both levels are
        # set. The script moves itself in, so the loop (and what it forks) inherits the group.
        pct = uclamp_percent(spec.cgroup_uclamp_min)
        p.setup += [*cgroup_lines(AGENT_CGROUP),
                    f"setall cgroup_uclamp_min '{HARNESS_CGROUP}/cpu.uclamp.min {AGENT_CGROUP}/cpu.uclamp.min' {pct}",
                    f"echo $$ > {AGENT_CGROUP}/cgroup.procs"]
        p.applied["cgroup_uclamp_min"] = spec.cgroup_uclamp_min


# -- read back -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdleState:
    name: str
    latency_us: int
    usage: int
    time_us: int
    disabled: bool


@dataclass
class Snapshot:
    """The platform's sysfs at one moment, as the guest's `snapshot` helper wrote it."""

    uptime_s: float = 0.0
    energy_uj: int = 0
    active_us: int = 0
    idle_us: int = 0
    cycles: int = 0
    per_cpu: dict[int, dict[str, int]] = field(default_factory=dict)   # cpu -> energy_uj/active_us/idle_us/cycles
    params: dict[str, str] = field(default_factory=dict)    # the sim drivers' parameters as the kernel holds them
    cpufreq_driver: str = ""
    cpuidle_driver: str = ""
    idle_governor: str = ""
    pm_qos_us: int | None = None
    governors: dict[int, str] = field(default_factory=dict)           # policy -> governor
    cur_khz: dict[int, int] = field(default_factory=dict)
    available_khz: list[int] = field(default_factory=list)
    rate_limit_us: dict[int, int] = field(default_factory=dict)
    time_in_state: dict[int, dict[int, int]] = field(default_factory=dict)   # policy -> khz -> 10 ms
    busy_time_in_state: dict[int, int] = field(default_factory=dict)          # khz -> us a task ran (all CPUs)
    cpu_busy_time_in_state: dict[int, dict[int, int]] = field(default_factory=dict)   # cpu -> khz -> us
    idle: dict[int, list[IdleState]] = field(default_factory=dict)            # cpu -> states by index
    sched_ext_state: str | None = None      # /sys/kernel/sched_ext (a sched_ext cell's snapshots only)
    sched_ext_ops: str | None = None
    sched_ext_enable_seq: int | None = None


_LINE = re.compile(r"^(?P<path>[^:]+):(?P<value>.*)$")


class SnapshotError(ValueError):
    pass


def parse_snapshot(text: str, origin: str = "snapshot") -> Snapshot:
    """A snapshot the guest wrote -> Snapshot. Values that are not what sysfs would show (a
    non-number where a count goes, an odd state name) are a SnapshotError naming the line."""
    s = Snapshot()
    idle: dict[tuple[int, int], dict[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            continue
        key, value = m["path"], m["value"].strip()
        try:
            _apply(s, idle, key, value)
        except _Refused as e:
            raise SnapshotError(f"{origin}:{n}: {excerpt(key, 80)}: {e} ({excerpt(value, 40)})") from None
        except (ValueError, OverflowError):
            raise SnapshotError(f"{origin}:{n}: {excerpt(key, 80)}: unexpected value ({excerpt(value, 40)})") from None
    for (cpu, _idx), f in sorted(idle.items()):
        name = f.get("name", "?")
        if not _STATE_NAME.match(name):
            raise SnapshotError(f"{origin}: cpu{cpu} has an idle state named {excerpt(name, 40)!r}")
        try:
            state = IdleState(name, _int(f.get("latency", "0")), _int(f.get("usage", "0")), _int(f.get("time", "0")),
                              f.get("disable", "0") == "1")
        except ValueError:
            raise SnapshotError(f"{origin}: cpu{cpu} idle state {name}: a count is not a number") from None
        s.idle.setdefault(cpu, []).append(state)
    return s


_STATE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_NUM = re.compile(r"^-?[0-9]{1,20}$")
_UNUM = re.compile(r"^[0-9]{1,20}$")


class _Refused(ValueError):
    """A value of the right shape that the kernel cannot have written (the message says why)."""


def _time_in_state_line(table: dict[int, int], value: str) -> None:
    """One "kHz time" line of a time-in-state table: unsigned counters, each frequency once."""
    khz, t = value.split()
    if not (_UNUM.match(khz) and _UNUM.match(t)):
        raise ValueError(value)
    if int(khz) in table:
        raise _Refused(f"frequency {int(khz)} kHz listed twice")
    table[int(khz)] = int(t)


def _int(value: str) -> int:
    if not _NUM.match(value):
        raise ValueError(value)
    return int(value)


def _apply(s: Snapshot, idle: dict, key: str, value: str) -> None:
    if key == "uptime":
        s.uptime_s = float(value)
        if not math.isfinite(s.uptime_s):
            raise ValueError(value)
    elif key == "pm_qos_us":
        s.pm_qos_us = _int(value) if _NUM.match(value) else None
    elif m2 := re.match(rf"{CPU}/sim_power/(?:cpu(\d{{1,4}})/)?(energy_uj|active_us|idle_us|cycles)$", key):
        if m2[1] is None:
            setattr(s, m2[2], _int(value))
        else:
            s.per_cpu.setdefault(int(m2[1]), {})[m2[2]] = _int(value)
    elif m2 := re.match(rf"{CPU}/sim_power/(?:cpu(\d{{1,4}})/)?busy_time_in_state$", key):
        table = s.busy_time_in_state if m2[1] is None else s.cpu_busy_time_in_state.setdefault(int(m2[1]), {})
        _time_in_state_line(table, value)
    elif m2 := re.match(r"/sys/module/(sim_cpufreq|cpuidle_sim)/parameters/(\w{1,32})$", key):
        s.params[f"{m2[1]}.{m2[2]}"] = excerpt(value, 300)
    elif key == f"{SCHED_EXT}/state":
        s.sched_ext_state = excerpt(value, 32)
    elif key == f"{SCHED_EXT}/root/ops":
        s.sched_ext_ops = excerpt(value, 64)
    elif key == f"{SCHED_EXT}/enable_seq":
        s.sched_ext_enable_seq = _int(value)
    elif key == f"{CPU}/cpuidle/current_driver":
        s.cpuidle_driver = excerpt(value, 32)
    elif key == f"{CPU}/cpuidle/current_governor":
        s.idle_governor = excerpt(value, 32)
    elif m2 := re.match(rf"{CPU}/cpufreq/policy(\d{{1,4}})/(.+)$", key):
        pol, leaf = int(m2[1]), m2[2]
        if leaf == "scaling_governor":
            s.governors[pol] = excerpt(value, 32)
        elif leaf == "scaling_cur_freq":
            s.cur_khz[pol] = _int(value)
        elif leaf == "scaling_driver":
            s.cpufreq_driver = excerpt(value, 32)
        elif leaf == "scaling_available_frequencies":
            s.available_khz = [_int(x) for x in value.split()[:64]]
        elif leaf == "schedutil/rate_limit_us":
            s.rate_limit_us[pol] = _int(value)
        elif leaf == "stats/time_in_state":
            _time_in_state_line(s.time_in_state.setdefault(pol, {}), value)
    elif m2 := re.match(rf"{CPU}/cpu(\d{{1,4}})/cpuidle/state(\d{{1,2}})/(\w+)$", key):
        idle.setdefault((int(m2[1]), int(m2[2])), {})[m2[3]] = value


@dataclass(frozen=True)
class PlatformDelta:
    """What the platform did between two snapshots (one repeat of the loop)."""

    elapsed_s: float
    energy_uj: int
    active_us: int
    idle_us: int
    freq_time_s: dict[int, float]      # khz -> CPU-seconds at that OPP (all policies)
    idle_time_s: dict[str, float]      # state -> CPU-seconds in it (all CPUs)
    idle_entries: dict[str, int]
    per_cpu: dict[int, dict[str, int]] = field(default_factory=dict)   # cpu -> energy_uj/active_us/idle_us/cycles
    busy_freq_time_s: dict[int, float] = field(default_factory=dict)   # khz -> CPU-seconds a task ran at it
    cpu_busy_freq_time_s: dict[int, dict[int, float]] = field(default_factory=dict)   # cpu -> the same, one CPU


def delta(before: Snapshot, after: Snapshot) -> PlatformDelta:
    freq: dict[int, float] = {}
    for pol, table in after.time_in_state.items():
        for khz, t in table.items():
            freq[khz] = freq.get(khz, 0.0) + (t - before.time_in_state.get(pol, {}).get(khz, 0)) / 100
    idle_t: dict[str, float] = {}
    idle_n: dict[str, int] = {}
    for cpu, states in after.idle.items():
        prev = before.idle.get(cpu, [])
        for i, st in enumerate(states):
            b = prev[i] if i < len(prev) else IdleState(st.name, 0, 0, 0, False)
            idle_t[st.name] = idle_t.get(st.name, 0.0) + (st.time_us - b.time_us) / 1e6
            idle_n[st.name] = idle_n.get(st.name, 0) + st.usage - b.usage
    per = {cpu: {k: v - before.per_cpu.get(cpu, {}).get(k, 0) for k, v in vals.items()}
           for cpu, vals in after.per_cpu.items()}
    elapsed = after.uptime_s - before.uptime_s
    ncpus = max(len(after.cpu_busy_time_in_state), len(after.per_cpu), 1)

    def busy(a: dict[int, int], b: dict[int, int], where: str, cpus: int) -> dict[int, float]:
        """Busy seconds per frequency between the snapshots. The kernel's counters only grow and
        keep every frequency they once listed, and a CPU is busy at most for the time that passed."""
        if lost := sorted(set(b) - set(a)):
            raise ValueError(f"busy_time_in_state{where}: {lost[0]} kHz listed before the run, not after it")
        out = {}
        for khz, t in a.items():
            if t < b.get(khz, 0):
                raise ValueError(f"busy_time_in_state{where}: {khz} kHz went down ({b[khz]} -> {t} us)")
            out[khz] = (t - b.get(khz, 0)) / 1e6
        if sum(out.values()) > cpus * (elapsed * 1.05 + 0.01):
            raise ValueError(f"busy_time_in_state{where}: {sum(out.values()):.3f} s busy in {elapsed:.3f} s "
                             f"on {cpus} CPU(s)")
        return out

    return PlatformDelta(elapsed, after.energy_uj - before.energy_uj,
                         after.active_us - before.active_us, after.idle_us - before.idle_us, freq, idle_t, idle_n,
                         per, busy(after.busy_time_in_state, before.busy_time_in_state, "", ncpus),
                         {cpu: busy(t, before.cpu_busy_time_in_state.get(cpu, {}), f" of cpu{cpu}", 1)
                          for cpu, t in after.cpu_busy_time_in_state.items()})


def summarize(deltas: list[PlatformDelta], steps_per_repeat: int, agent_cpu: int | None = None) -> PlatformSummary:
    """Per-cell energy and residency over all repeats (each delta: one repeat's measured steps from
    the loop's own meter, or the whole repeat from the shell's snapshots, as `steps_per_repeat`
    counts them); fractions are of total CPU time. With the agent pinned (`agent_cpu`), its
    CPU's energy and cycles per step too: the figures the frontier bound is compared with."""
    energy = sum(d.energy_uj for d in deltas)
    elapsed = sum(d.elapsed_s for d in deltas)
    freq: dict[int, float] = {}
    idle_t: dict[str, float] = {}
    idle_n: dict[str, int] = {}
    for d in deltas:
        for k, v in d.freq_time_s.items():
            freq[k] = freq.get(k, 0.0) + v
        for k, v in d.idle_time_s.items():
            idle_t[k] = idle_t.get(k, 0.0) + v
        for k, v in d.idle_entries.items():
            idle_n[k] = idle_n.get(k, 0) + v
    freq_total = sum(freq.values()) or 1.0
    cpu_total = (sum(d.active_us + d.idle_us for d in deltas) / 1e6) or 1.0
    steps = steps_per_repeat * len(deltas)
    per_step = (lambda x: round(x / steps_per_repeat, 2)) if steps_per_repeat else (lambda x: 0.0)
    agent = agent_cpu is not None and steps_per_repeat and all(agent_cpu in d.per_cpu for d in deltas)

    def agent_per_step(key: str) -> list[float]:
        return [per_step(d.per_cpu[agent_cpu].get(key, 0)) for d in deltas] if agent else []

    return PlatformSummary(
        energy_uj=energy,
        energy_per_step_uj=round(energy / steps, 1) if steps else None,
        energy_per_step_by_repeat_uj=[per_step(d.energy_uj) for d in deltas],
        avg_power_mw=round(energy / elapsed / 1e3, 1) if elapsed > 0 else None,
        elapsed_s=round(elapsed, 3),
        active_fraction=round(sum(d.active_us for d in deltas) / 1e6 / cpu_total, 4),
        freq_residency={str(k): round(v / freq_total, 4) for k, v in sorted(freq.items())},
        idle_residency={k: round(v / cpu_total, 4) for k, v in idle_t.items()},
        idle_entries=idle_n,
        period_per_step_by_repeat_us=[round(d.elapsed_s * 1e6 / steps_per_repeat, 2) if steps_per_repeat else 0.0
                                      for d in deltas],
        agent_cpu=agent_cpu if agent else None,
        agent_energy_per_step_by_repeat_uj=agent_per_step("energy_uj"),
        agent_cycles_per_step_by_repeat=agent_per_step("cycles"),
        agent_active_per_step_by_repeat_us=agent_per_step("active_us"),
        agent_idle_per_step_by_repeat_us=agent_per_step("idle_us"),
    )


def verify(spec: PlatformSpec, arch: str, snap: Snapshot) -> list[str]:
    """Knobs the guest does not show as requested, in words; [] when all hold."""
    bad = []
    for item in sim_cmdline(spec, arch):     # what the drivers hold, as /sys/module shows it
        key, want = item.split("=", 1)
        got = snap.params.get(key)
        if snap.params and got != want:
            bad.append(f"{key} is {excerpt(got or 'absent', 80)!r}, not {excerpt(want, 80)!r}")
    if snap.cpufreq_driver != "sim-cpufreq":
        bad.append(f"cpufreq driver is {snap.cpufreq_driver or 'absent'!r}, not 'sim-cpufreq' "
                   "(is the sim-platform series and fragment in this kernel?)")
    if snap.cpuidle_driver != "sim-cpuidle":
        bad.append(f"cpuidle driver is {snap.cpuidle_driver or 'absent'!r}, not 'sim-cpuidle'")
    want_khz = [o.khz for o in spec.sim.opps]
    if snap.available_khz and snap.available_khz != want_khz:
        bad.append(f"OPPs are {snap.available_khz}, not {want_khz}")
    for pol, gov in snap.governors.items():
        if gov != spec.governor:
            bad.append(f"policy{pol} governor is {gov}, not {spec.governor}")
    if spec.governor == "userspace":
        for pol, khz in snap.cur_khz.items():
            if khz != spec.userspace_frequency():
                bad.append(f"policy{pol} runs at {khz} kHz, not {spec.userspace_frequency()}")
    want_states = cstate_names(spec, arch)
    for cpu, states in snap.idle.items():
        names = [s.name for s in states]
        if names != want_states:
            bad.append(f"cpu{cpu} idle states are {names}, not {want_states}")
            break
        lat = {c.name: c.exit_latency_us for c in spec.sim.cstates}
        wrong = [s.name for s in states if s.latency_us != lat[s.name]]
        if wrong:
            bad.append(f"cpu{cpu} exit latencies differ for {wrong}")
    if snap.cpuidle_driver and snap.idle_governor != spec.idle_governor:
        bad.append(f"idle governor is {snap.idle_governor}, not {spec.idle_governor}")
    if spec.pm_qos_latency_us is not None and snap.pm_qos_us != spec.pm_qos_latency_us:
        bad.append(f"PM QoS CPU latency is {snap.pm_qos_us}, not {spec.pm_qos_latency_us}")
    return bad
