"""The experiment schema: what a YAML experiment may say, checked strictly.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored knob.
Types are strict (an integer field refuses `true`, `"10"` and `2.0`) and numbers finite. A
`CellSpec` is one fully resolved point of the matrix: the kernel to build, the machine to boot,
the platform knobs, the workload and the probes. An `Experiment` is a base cell plus the matrix
axes and named variants (baselines) that expand into cells.
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# --- Bounds ----------------------------------------------------------------------------------
# Every limit an experiment is checked against, in one place, with why. A value past one is
# refused at its line and column before anything is read, built or booted.

# The file and its YAML (harness/spec/yamlsrc.py).
FILE_MAX_BYTES = 1 << 20          # real experiments are under 5 KB; refused from stat, never read whole
YAML_MAX_NODES = 20_000           # after alias expansion: 540 bytes of nested aliases make 9**9 nodes
YAML_MAX_DEPTH = 32               # the deepest real path is 7 (variants[i].set.platform.sim.cstates[j].name)
MAX_ISSUES_SHOWN = 20             # a file of garbage gives 20 located lines, then a count

# The matrix (harness/spec/loader.py).
MAX_CELLS = 1_000                 # arch x variants x matrix product; each cell builds or boots a VM
MAX_EXPANDED_VALUES = 500_000     # values over all cells (each cell is a copy of the base plus its
                                  # overrides, validated on its own): keeps a loading under a second or two
CELL_ID_MAX = 96                  # the id is a directory name inside paths virtme-ng shares
STEPS_TOTAL_MAX = 10_000_000      # (steps + warmup) x agents x repeats of one cell: every step is a
                                  # CSV row (~60 B) and a run's stamps sit in guest memory
NAME_MAX = 64                     # names of experiments, variants, series, fragments
DESCRIPTION_MAX = 1_000           # a paragraph; it lands in every result.json
PATH_MAX_CHARS = 1_024            # kernel.source, workload.wait.file
DOTTED_KEY_MAX = 128              # a matrix axis or a variant's set key

# The machine.
MEMORY_MIN_MIB = 256              # below this the guest (virtme-ng's init, 9p, bpftrace) does not boot
                                  # reliably; the upper bound is the host's RAM (host_memory_bytes())
BOOT_TIMEOUT_MAX_S = 3_600        # a KASAN kernel under TCG boots in ~10 min; an hour is a hang
RUN_TIMEOUT_MAX_S = 86_400        # one cell's workload: a day
CMDLINE_ITEMS_MAX = 32            # the kernel command line is 2048 bytes (COMMAND_LINE_SIZE) and
CMDLINE_CHARS_MAX = 512           # virtme-ng and the simulated platform use most of the rest
CMDLINE_ITEM_MAX = 128

# The simulated platform: physical ranges (a CPU, not a supercomputer).
KHZ_MIN, KHZ_MAX = 1_000, 10_000_000          # 1 MHz .. 10 GHz
MICROVOLT_MIN, MICROVOLT_MAX = 100_000, 2_000_000   # a CPU rail: 0.1 .. 2 V (the driver refuses > 2 V)
DYN_COEFF_MAX = 100_000                       # uW/MHz/V^2; real DT values are 50 .. 2000
LEAKAGE_MAX_UA = 100_000_000                  # 100 A x V of static power: far beyond any core
POWER_MAX_MW = 100_000                        # 100 W per CPU
STEAL_CHUNK_MIN_US, STEAL_CHUNK_MAX_US = 5, 1_000   # below 5 us the timer's own cost dominates
OPPS_MAX = 16                                 # the OPP table rides on the kernel command line
CSTATES_MAX = 10                              # CPUIDLE_STATE_MAX
EXIT_LATENCY_MAX_US = 100_000                 # the simulation spins it on every wakeup; real states < 10 ms
TARGET_RESIDENCY_MAX_US = 1_000_000           # 1 s
TRANSITION_LATENCY_MAX_US = 100_000           # 100 ms
RATE_LIMIT_MAX_US = 1_000_000                 # schedutil rate_limit_us: 1 s
# the C schedulers of the kernel's tools/sched_ext (the kernel build builds them with the option)
SchedExt = Literal["scx_simple", "scx_qmap", "scx_central", "scx_flatcg"]
PM_QOS_MAX_US = 2_000_000_000                 # PM_QOS_CPU_LATENCY_DEFAULT_VALUE (2000 s, "no constraint")

# The loop (harness/workload/agentloop.c, which itself refuses a wait over an hour).
WAIT_MAX_US = 600_000_000         # 10 min: a wait that long is a stall, not a tool round trip; the
                                  # hang test (tests/test_guest_boot.py) waits 300 s against a 120 s
                                  # timeout (boot included)
COMPUTE_UNITS_MAX = 200_000_000   # 1000x the default 200000 (2.4 ms at fmax): ~2.4 s at fmax and ~10 s
                                  # at the lowest default OPP under virtual time, per step
STEPS_MAX = 50_000_000            # per field; STEPS_TOTAL_MAX bounds the product
TOUCH_PAGES_MAX = 65_536          # 256 MiB of fresh pages per step
READ_KB_MAX = 262_144             # 256 MiB read per step
INJECT_DELAY_MAX_US = 1_000_000   # 1 s between the world's stamp and its signal
SEED_MAX = 2**32 - 1              # seed + repeat goes to strtoull
PERIOD_MAX_US = 10_000_000        # a control loop's period: 10 s (agentloop's own bound)
LOGNORMAL_SIGMA_MAX = 10.0        # ln-space spread: sigma 10 puts p99 at e^23 x the median, far past any cap


def host_memory_bytes() -> int | None:
    """The host's RAM (None where sysconf cannot say): a guest cannot have more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# Kernel parameters the harness or virtme-ng sets itself, which an experiment's machine.cmdline
# may not override: the simulated platform's tables (harness/guest/platform.py sim_cmdline():
# sim_cpufreq.*, cpuidle_sim.*), idle=poll / nohlt (platform.idle_poll, plan()), and what
# virtme-ng passes to boot its guest (init=, the root filesystem, the consoles, panic=-1,
# virtme.* / virtme_*). cpufreq.* and cpuidle.* (cpufreq.off, cpuidle.off, the default governors)
# would undo the platform section, which sets them through sysfs and checks they hold. A name is
# compared with '-' read as '_', as the kernel does.
RESERVED_CMDLINE_NAMES = frozenset({
    "init", "rdinit", "root", "rootfstype", "rootflags", "ro", "rw", "console", "earlycon", "earlyprintk",
    "panic", "idle", "nohlt",
})
RESERVED_CMDLINE_PREFIXES = ("virtme.", "virtme_", "sim_cpufreq.", "cpuidle_sim.", "cpufreq.", "cpuidle.",
                             "harness.")   # harness.deploy= marks a kernel deployed to a target
# One token virtme-ng can splice into its shell command and the kernel reads as one parameter
# (the same set harness/guest/vm.py checks at boot, plus: no leading '-', so no '--' init args).
CMDLINE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./+:,=-]*$")
SAFE_PATH = re.compile(r"[A-Za-z0-9_./+-]+")         # host paths the runner hands on (as harness/guest/vm.py)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
KCONFIG_VALUE = re.compile(r'^(?:[ynm]|-?[0-9]+|0[xX][0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')
KCONFIG_VALUE_MAX = 200
KCONFIG_SYMBOL_MAX = 80           # the longest symbols in 6.12 are ~50 characters
KCONFIG_ITEMS_MAX = 256


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _name(v: str) -> str:
    if len(v) > NAME_MAX or not _NAME.fullmatch(v):
        raise ValueError(f"not a name: use letters, digits and _ . + - (the first a letter or digit), at most "
                         f"{NAME_MAX} characters (got {v[:40]!r})")
    return v


def _cmdline_item(v: str) -> str:
    if len(v) > CMDLINE_ITEM_MAX:
        raise ValueError(f"a kernel command line item is at most {CMDLINE_ITEM_MAX} characters (this one has "
                         f"{len(v)})")
    if not CMDLINE_TOKEN.fullmatch(v):
        bad = sorted({repr(c) for c in v if not CMDLINE_TOKEN.fullmatch("a" + c)})
        why = f"has {' '.join(bad)}" if bad else "starts with a character other than a letter or digit"
        raise ValueError(f"not a single kernel parameter token ({why}); virtme-ng passes it through a "
                         "shell, so use letters, digits and _ . / + : , = - only")
    name = v.split("=", 1)[0].replace("-", "_")
    if name in RESERVED_CMDLINE_NAMES or name.startswith(RESERVED_CMDLINE_PREFIXES):
        raise ValueError(f"'{v.split('=', 1)[0]}' is set by the harness or virtme-ng itself "
                         "(RESERVED_CMDLINE_NAMES in harness/spec/model.py)")
    return v


def _target(v: str) -> str:
    from harness.target.inventory import target_field  # the target package builds on this module
    return target_field(v)


def _no_control(v: str) -> str:
    if m := _CONTROL.search(v):
        raise ValueError(f"control character U+{ord(m.group(0)):04X} is not allowed here")
    return v


def _paragraph(v: str) -> str:
    if m := _CONTROL.search(v.replace("\n", " ").replace("\t", " ")):
        raise ValueError(f"control character U+{ord(m.group(0)):04X} is not allowed in a description")
    return v


def _pattern(rx: str, max_len: int, what: str):
    compiled = re.compile(rx)

    def check(v: str) -> str:
        if len(v) > max_len or not compiled.fullmatch(v):
            raise ValueError(f"{v[:40]!r} is not {what}" + (f" (at most {max_len} characters)" if len(v) > max_len
                                                             else ""))
        return v
    return AfterValidator(check)


def _kconfig_value(v: str) -> str:
    if len(v) > KCONFIG_VALUE_MAX:
        raise ValueError(f"a config value is at most {KCONFIG_VALUE_MAX} characters (this one has {len(v)})")
    _no_control(v)
    if not KCONFIG_VALUE.fullmatch(v):
        raise ValueError(f"{v[:40]!r} is not a Kconfig value: use y, n, m, an integer, 0x-hex, or a "
                         "double-quoted string (write '\"text\"' in YAML)")
    return v


def _memory(v: str) -> str:
    mib = int(v[:-1]) * (1024 if v.endswith("G") else 1)
    if mib < MEMORY_MIN_MIB:
        raise ValueError(f"{v} is less than the {MEMORY_MIN_MIB}M a guest needs")
    host = host_memory_bytes()
    if host is not None and mib * (1 << 20) > host:
        raise ValueError(f"{v} is more than this host's RAM ({host / (1 << 30):.1f}G)")
    return v


Arch = Literal["x86_64", "arm64"]
ARCHES: tuple[str, ...] = ("x86_64", "arm64")
# One compute unit of agentloop (its inner loop iteration) under QEMU virtual time (-icount shift=0:
# one instruction per ns), i.e. at the simulated platform's fmax, per guest arch: the step's work
# in cycles is units x this x fmax. Measured by experiments/sim_platform.yaml (opp-max cells,
# compute_mean_us / compute_units); the unit is a different instruction mix on each arch.
UNIT_NS_AT_FMAX: dict[str, float] = {"x86_64": 12.054, "arm64": 6.031}
Name = Annotated[str, AfterValidator(_name)]
ConfigSymbol = Annotated[str, _pattern(r"CONFIG_[A-Z0-9_]+", KCONFIG_SYMBOL_MAX,
                                        "a Kconfig symbol (CONFIG_ then capitals, digits and _)")]
KconfigValue = Annotated[str, AfterValidator(_kconfig_value)]
CmdlineItem = Annotated[str, AfterValidator(_cmdline_item)]
StateName = Annotated[str, _pattern(r"[A-Za-z0-9_-]+", 15, "an idle state name (letters, digits, _ and -)")]
# A dotted cell field: workload.wait.us, kernel.config.CONFIG_HZ.
DottedKey = Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", DOTTED_KEY_MAX,
                                     "a dotted cell field like workload.wait.us")]


def _also_accept(schema: dict, key: str, alternatives: list[dict]) -> None:
    """The JSON Schema of a field whose before-validator converts other input types."""
    schema[key] = {"anyOf": [schema[key], *alternatives]}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _unique(v: list, what: str) -> list:
    seen = set()
    for x in v:
        if x in seen:
            raise ValueError(f"{what} {x!r} is listed twice")
        seen.add(x)
    return v


class KernelSpec(Strict):
    """Which kernel a cell boots. Every field feeds the build's content-addressed cache key."""

    source: Annotated[str, AfterValidator(_no_control)] = Field(
        "debian", min_length=1, max_length=PATH_MAX_CHARS,
        description="'debian' (linux-source-6.12), a kernel git tree or a .tar/.tar.gz/.tar.xz/.tar.zst tarball")
    series: list[Name] = Field(["sim-platform", "agent-latency"], max_length=32,
                               description="patch series under kernel/patches/, in order")
    fragments: list[Name] = Field(["base", "tracing", "platform", "sim-platform"], max_length=32,
                                  description="kernel/configs/<name>.config, merged in order "
                                              "(the arch fragment is added)")
    agent_latency: bool = Field(False, description="CONFIG_AGENT_LATENCY on or off")
    debug: bool = Field(False, description="add kernel/configs/debug.config (lockdep, KASAN)")
    config: dict[ConfigSymbol, KconfigValue] = Field(
        {}, max_length=KCONFIG_ITEMS_MAX, description="extra CONFIG_X: value items, applied last and checked "
        "(y/n/m, an integer, 0x-hex or a double-quoted string)", json_schema_extra=lambda s: _also_accept(
            s, "additionalProperties", [{"type": "boolean"}, {"type": "integer"}]))   # _stringify turns them to text

    @field_validator("config", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ("y" if x is True else "n" if x is False else str(x) if isinstance(x, int) else x)
                    for k, x in v.items()}
        return v

    @field_validator("series")
    @classmethod
    def _unique_series(cls, v: list[str]) -> list[str]:
        return _unique(v, "series")

    @field_validator("fragments")
    @classmethod
    def _unique_fragments(cls, v: list[str]) -> list[str]:
        return _unique(v, "fragment")

    @property
    def variant(self) -> str:
        """Short label of the kernel variant, used by `build-kernel --config`."""
        label = "agent-on" if self.agent_latency else "agent-off"
        return label + ("+debug" if self.debug else "")


class MachineSpec(Strict):
    """The virtual machine a cell runs in."""

    cpus: int = Field(2, ge=1, le=64)
    memory: Annotated[str, _pattern(r"[1-9][0-9]{0,6}[MG]", 8, "a memory size like 512M or 2G"),
                      AfterValidator(_memory)] = Field(
        "1G", description=f"guest RAM, e.g. 512M or 2G: at least {MEMORY_MIN_MIB}M, at most the host's")
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    timing: Literal["auto", "virtual", "realtime"] = Field(
        "auto", description="virtual = QEMU -icount (TCG only); auto = virtual under TCG, realtime under KVM")
    icount_shift: int = Field(0, ge=0, le=10)
    arm64_cpu: Literal["cortex-a57", "cortex-a72", "max"] = "cortex-a57"
    cmdline: list[CmdlineItem] = Field([], max_length=CMDLINE_ITEMS_MAX,
                                       description="extra kernel parameters, one token each (not the "
                                                   "harness's own: RESERVED_CMDLINE_NAMES)")
    boot_timeout_s: int = Field(300, ge=10, le=BOOT_TIMEOUT_MAX_S, description="power-on to workload start")
    run_timeout_s: int = Field(1800, ge=10, le=RUN_TIMEOUT_MAX_S, description="workload start to power-off")
    target: Annotated[str, AfterValidator(_target)] | None = Field(
        None, max_length=300, description="run on a remote machine instead of a VM: ssh://[user@]host[:port] or "
        "a target (or fleet) of the targets inventory (harness/target/inventory.py); no passwords")

    @field_validator("cmdline")
    @classmethod
    def _cmdline_length(cls, v: list[str]) -> list[str]:
        if len(" ".join(v)) > CMDLINE_CHARS_MAX:
            raise ValueError(f"the extra kernel command line is {len(' '.join(v))} characters, more than "
                             f"{CMDLINE_CHARS_MAX}")
        return v

    @model_validator(mode="after")
    def _virtual_needs_tcg(self) -> MachineSpec:
        if self.timing == "virtual" and self.accel == "kvm":
            raise ValueError("timing 'virtual' (QEMU -icount) needs TCG, not accel 'kvm'")
        return self


class OPP(Strict):
    khz: int = Field(ge=KHZ_MIN, le=KHZ_MAX)
    microvolt: int = Field(ge=MICROVOLT_MIN, le=MICROVOLT_MAX, description="the OPP's voltage (DT opp-microvolt)")


def _state_power(v: Any) -> Any:
    """One message for a bad power, whichever form it tried (a union would give one per form)."""
    if v in ("clock-gated", "active"):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= POWER_MAX_MW:
        raise ValueError(f"want a power in mW (0 to {POWER_MAX_MW}), 'clock-gated' or 'active', got {v!r:.40}")
    return float(v)


def _userspace_khz(v: Any) -> Any:
    if v is None or v in ("min", "mid", "max"):
        return v
    if isinstance(v, bool) or not isinstance(v, int) or not KHZ_MIN <= v <= KHZ_MAX:
        raise ValueError(f"want a frequency in kHz ({KHZ_MIN} to {KHZ_MAX}) or min, mid, max, got {v!r:.40}")
    return v


CStatePower = Annotated[float | Literal["clock-gated", "active"], BeforeValidator(_state_power)]


class CState(Strict):
    name: StateName
    exit_latency_us: int = Field(ge=0, le=EXIT_LATENCY_MAX_US)
    target_residency_us: int = Field(ge=0, le=TARGET_RESIDENCY_MAX_US)
    power_mw: CStatePower = Field(
        "clock-gated", description="mW of a retention or power-gated state; 'clock-gated' (WFI, C1): the static "
                                   "power at the voltage of the OPP it idles at; 'active' (POLL only): running power")

    @model_validator(mode="before")
    @classmethod
    def _poll_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") == "POLL" and "power_mw" not in data:
            return {**data, "power_mw": "active"}
        return data

    @model_validator(mode="after")
    def _poll_is_active(self) -> CState:
        if (self.name == "POLL") != (self.power_mw == "active"):
            raise ValueError("POLL, and only POLL, draws 'active' power (a polling CPU runs)")
        return self


def _default_sim() -> dict[str, Any]:
    from harness.platform import presets  # data files in the package; no kernel source needed
    return presets.load(DEFAULT_PRESET)


DEFAULT_PRESET = "x86-skl-client"


class SimPlatform(Strict):
    """Simulated cpufreq/cpuidle platform (the guest has no real DVFS or C-states). `preset` names a
    table taken from a real SoC (harness/platform/presets/); fields given next to it override it."""

    # the JSON Schema describes the file: there, every field may be left to the preset
    model_config = ConfigDict(json_schema_extra=lambda s: s.pop("required", None))
    preset: Name | None = Field(None, description="platform preset (python -m harness presets lists them)")
    opps: list[OPP] = Field(max_length=OPPS_MAX)
    dynamic_power_coefficient: int = Field(ge=0, le=DYN_COEFF_MAX,
                                           description="uW/MHz/V^2: dynamic power = C x MHz x V^2 (the Energy "
                                                       "Model's DT dynamic-power-coefficient)")
    leakage_ua: int = Field(ge=0, le=LEAKAGE_MAX_UA, description="static power (uW) = leakage_ua x V")
    transition_latency_us: int = Field(50, ge=0, le=TRANSITION_LATENCY_MAX_US,
                                       description="request -> new frequency, invariance and power in effect")
    steal_chunk_us: int = Field(50, ge=STEAL_CHUNK_MIN_US, le=STEAL_CHUNK_MAX_US,
                                description="longest stretch of stolen time that emulates f < fmax: bounds how "
                                            "long an interrupt waits and the error on one short run")
    steal_irq_ns: int | None = Field(None, ge=0, le=100_000,
                                     description="what a steal interrupt costs the task besides its spin (counted "
                                                 "in the chunk); default: the harness's calibration for the arch "
                                                 "under QEMU virtual time (harness/guest/platform.py)")
    cstates: list[CState] = Field(max_length=CSTATES_MAX)

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        """A preset fills every field the experiment does not give (the default: DEFAULT_PRESET)."""
        if not isinstance(data, dict):
            return data
        from harness.platform import presets
        name = data.get("preset")
        if name is None:
            base = _default_sim()
        elif isinstance(name, str) and name in presets.names():
            base = presets.load(name)
        else:
            raise ValueError(f"preset {name!r} is not one of {presets.names()}")
        merged = {**base, **data}
        if name is None and any(k not in data for k in base):
            merged["preset"] = DEFAULT_PRESET       # say where the values not given came from
        return merged

    @field_validator("cstates")
    @classmethod
    def _cstates_ordered(cls, v: list[CState]) -> list[CState]:
        if not v:
            raise ValueError("at least one idle state is needed")
        if len({c.name for c in v}) != len(v):
            raise ValueError("idle state names must be unique")
        if [c.exit_latency_us for c in v] != sorted(c.exit_latency_us for c in v):
            raise ValueError("idle states go shallowest first (exit latency ascending)")
        if any(c.name == "POLL" for c in v[1:]):
            raise ValueError("POLL can only be the first idle state")
        return v

    @field_validator("opps")
    @classmethod
    def _opps_ascending(cls, v: list[OPP]) -> list[OPP]:
        if not v:
            raise ValueError("at least one OPP is needed")
        if [o.khz for o in v] != sorted({o.khz for o in v}):
            raise ValueError("OPP frequencies must be strictly ascending")
        if [o.microvolt for o in v] != sorted(o.microvolt for o in v):
            raise ValueError("OPP voltages must not fall as the frequency rises")
        return v

    @model_validator(mode="after")
    def _physical(self) -> SimPlatform:
        """No idle state may draw more than a shallower one, nor a fixed-power state more than the
        CPU draws clock-gated at its lowest OPP: such a table has no real counterpart."""
        from harness.platform.energy import PowerModel
        problems = PowerModel.from_sim(self).validate()
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PlatformSpec(Strict):
    """Power-management knobs applied and verified inside the guest before the loop starts."""

    governor: Literal["schedutil", "performance", "powersave", "userspace"] = "schedutil"
    userspace_khz: Annotated[int | Literal["min", "mid", "max"] | None, BeforeValidator(_userspace_khz)] = Field(
        None, description="frequency for the userspace governor: kHz, or the table's min, mid or max OPP")
    rate_limit_us: int | None = Field(None, ge=0, le=RATE_LIMIT_MAX_US, description="schedutil rate_limit_us")
    idle_governor: Literal["menu", "teo", "ladder"] = "menu"
    max_cstate: int | None = Field(None, ge=0, le=CSTATES_MAX - 1, description="deepest allowed C-state index")
    disabled_cstates: list[StateName] = Field([], max_length=CSTATES_MAX)
    only_cstate: StateName | None = Field(None, description="leave only this idle state enabled: a name, or "
                                                            "'shallowest' (the first after POLL) or 'deepest'")
    pm_qos_latency_us: int | None = Field(None, ge=0, le=PM_QOS_MAX_US,
                                          description="hold /dev/cpu_dma_latency at this value")
    idle_poll: bool = Field(False, description="idle=poll (x86_64) / nohlt (arm64)")
    uclamp_min: int | None = Field(None, ge=0, le=1024, description="sched_setattr uclamp.min on the agent")
    cgroup_uclamp_min: int | None = Field(None, ge=0, le=1024, description="cpu.uclamp.min (as capacity, "
                                          "0-1024) of a cgroup the agent runs in: a floor on all its tasks")
    sched_ext: SchedExt | None = Field(
        None, description="a tools/sched_ext scheduler (built with the kernel) that runs every task for the "
        "loop's whole life; needs the kernel's sched-ext fragment")
    sim: SimPlatform = Field(default_factory=lambda: SimPlatform.model_validate({}))

    @model_validator(mode="after")
    def _knobs_consistent(self) -> PlatformSpec:
        if self.governor == "userspace":
            if self.userspace_khz is None:
                raise ValueError("governor 'userspace' needs userspace_khz")
            if self.userspace_frequency() not in [o.khz for o in self.sim.opps]:
                raise ValueError(f"userspace_khz {self.userspace_khz} is not one of the OPPs "
                                 f"{[o.khz for o in self.sim.opps]}")
        if self.rate_limit_us is not None and self.governor != "schedutil":
            raise ValueError(f"rate_limit_us is a schedutil tunable, but the governor is '{self.governor}'")
        names = [c.name for c in self.sim.cstates]
        unknown = [n for n in self.disabled_cstates if n not in names]
        if unknown:
            raise ValueError(f"disabled_cstates names {unknown}, not among the simulated states {names}")
        if self.max_cstate is not None and self.max_cstate >= len(names):
            raise ValueError(f"max_cstate {self.max_cstate} is past the last of {len(names)} simulated states")
        if self.only_cstate is not None and self.only_state() not in names:
            raise ValueError(f"only_cstate {self.only_cstate!r} is not among the simulated states {names}")
        return self

    def userspace_frequency(self) -> int | None:
        """userspace_khz as a frequency (min / mid / max resolved against the OPP table)."""
        khz = [o.khz for o in self.sim.opps]
        return {"min": khz[0], "mid": khz[(len(khz) - 1) // 2], "max": khz[-1]}.get(self.userspace_khz,
                                                                                  self.userspace_khz)

    def cstates_on(self, arch: str) -> list[str]:
        """The idle states the guest shows: POLL is the core's poll state, which arm64 has not."""
        return [c.name for c in self.sim.cstates if not (c.name == "POLL" and arch != "x86_64")]

    def disabled_on(self, arch: str) -> list[str]:
        """The states the knobs disable on `arch`, in table order."""
        off = set(self.disabled_cstates)
        if self.max_cstate is not None:   # an index into the experiment's table, the same on every arch
            off |= {c.name for c in self.sim.cstates[self.max_cstate + 1:]}
        if self.only_cstate is not None:
            off |= {c.name for c in self.sim.cstates if c.name != self.only_state()}
        return [n for n in self.cstates_on(arch) if n in off]

    def only_state(self) -> str | None:
        """only_cstate as a state name (shallowest / deepest resolved against the table)."""
        names = [c.name for c in self.sim.cstates]
        real = [n for n in names if n != "POLL"] or names
        return {"shallowest": real[0], "deepest": real[-1]}.get(self.only_cstate, self.only_cstate)


class WaitSpec(Strict):
    """How the agent waits for the world between steps."""

    kind: Literal["futex", "eventfd", "pipe", "timerfd", "epoll", "io_uring", "nanosleep"] = "futex"
    distribution: Literal["fixed", "uniform", "exponential", "file"] = "fixed"
    us: float = Field(2000, ge=0, le=WAIT_MAX_US, description="fixed value, or the mean for exponential")
    period_us: int | None = Field(None, ge=1, le=PERIOD_MAX_US, description="a periodic timerfd (kind timerfd): "
                                  "a step is released every period and must end before the next release, else it "
                                  "counts as a deadline miss (a control loop; the wait distribution is not used)")
    min_us: float | None = Field(None, ge=0, le=WAIT_MAX_US)
    max_us: float | None = Field(None, ge=0, le=WAIT_MAX_US)
    file: Annotated[str, _pattern(SAFE_PATH.pattern, PATH_MAX_CHARS, "a plain path (letters, digits and "
                                  "_ . / + - only)")] | None = Field(
        None, description="one wait time in us per line, for distribution 'file' (a regular file of at most "
                          "16 MiB; letters, digits and _./+- in its path)")

    @model_validator(mode="after")
    def _distribution_fields(self) -> WaitSpec:
        if self.distribution == "uniform":
            if self.min_us is None or self.max_us is None or self.min_us > self.max_us:
                raise ValueError("distribution 'uniform' needs min_us <= max_us")
        if self.distribution == "file" and not self.file:
            raise ValueError("distribution 'file' needs file")
        if self.period_us is not None:
            if self.kind != "timerfd":
                raise ValueError(f"period_us is a periodic timerfd: it needs kind 'timerfd', not '{self.kind}'")
            # what a record's dump of the spec holds too (defaults, None) is not "given"
            given = ([] if self.distribution == "fixed" else ["distribution"]) + \
                [n for n in ("min_us", "max_us", "file") if getattr(self, n) is not None]
            if given:
                raise ValueError(f"period_us releases the steps itself: {', '.join(given)} would not be used")
        return self


WAIT_FILE_MAX_BYTES = 16 << 20    # the loop reads one value per step; 16 MiB is over a million steps


class PhasesSpec(Strict):
    """Optional per-step phases that exercise memory, the page cache and path lookup."""

    touch_pages: int = Field(0, ge=0, le=TOUCH_PAGES_MAX, description="fresh pages faulted in per step")
    read_kb: int = Field(0, ge=0, le=READ_KB_MAX, description="file data read per step")
    drop_cache_every: int = Field(0, ge=0, le=STEPS_MAX,
                                  description="evict the file every N steps (page cache misses)")
    path_depth: int = Field(0, ge=0, le=64, description="directory depth of per-step stat/open")
    path_misses: bool = Field(False, description="also stat a name that does not exist, new each step "
                              "(a dentry cache miss and a filesystem lookup per step)")
    disk_mb: int = Field(0, ge=0, le=4096, description="keep the phases' files on an ext4 disk of this size "
                         "(virtio-blk) instead of the guest's tmpfs, where the page cache never misses")

    @model_validator(mode="after")
    def _misses_need_paths(self) -> PhasesSpec:
        if self.path_misses and not self.path_depth:
            raise ValueError("path_misses needs path_depth (the missing names sit next to the path's leaf)")
        return self

    @model_validator(mode="after")
    def _drop_needs_disk(self) -> PhasesSpec:
        if self.drop_cache_every and not self.disk_mb:
            raise ValueError("drop_cache_every needs disk_mb: tmpfs pages cannot be dropped, so they never miss")
        return self


class ComputeSpec(Strict):
    """Per-step compute drawn from a distribution, in loop iterations (units; 200000 units are about
    2.4 ms at fmax on x86_64 and 1.2 ms on arm64 under QEMU virtual time: harness/workload/command.py).
    Without it every step computes workload.compute_units."""

    distribution: Literal["uniform", "lognormal", "file"]
    min_units: int | None = Field(None, ge=0, le=COMPUTE_UNITS_MAX, description="uniform: the least work")
    max_units: int | None = Field(None, ge=0, le=COMPUTE_UNITS_MAX,
                                  description="uniform: the most work; lognormal: a cap (default: the bound)")
    median_units: float | None = Field(None, gt=0, le=COMPUTE_UNITS_MAX,
                                       description="lognormal: the median (with p99_units)")
    p99_units: float | None = Field(None, gt=0, le=COMPUTE_UNITS_MAX, description="lognormal: the 99th percentile")
    mu: float | None = Field(None, ge=0, le=math.log(COMPUTE_UNITS_MAX),
                             description="lognormal: mean of ln(units) (with sigma; or median/p99)")
    sigma: float | None = Field(None, ge=0, le=LOGNORMAL_SIGMA_MAX, description="lognormal: sd of ln(units)")
    file: Annotated[str, _pattern(SAFE_PATH.pattern, PATH_MAX_CHARS, "a plain path (letters, digits and "
                                  "_ . / + - only)")] | None = Field(
        None, description="one step's units per line, cycled (a recorded trace; a regular file of at most 16 MiB)")

    @model_validator(mode="after")
    def _distribution_fields(self) -> ComputeSpec:
        d = self.distribution
        allowed = {"uniform": {"min_units", "max_units"}, "file": {"file"},
                   "lognormal": {"median_units", "p99_units", "mu", "sigma", "max_units"}}[d]
        extra = sorted(n for n in self.model_fields_set - {"distribution"}
                       if n not in allowed and getattr(self, n) is not None)
        if extra:
            raise ValueError(f"{', '.join(extra)}: not a parameter of distribution '{d}'")
        if d == "uniform" and (self.min_units is None or self.max_units is None or self.min_units > self.max_units):
            raise ValueError("distribution 'uniform' needs min_units <= max_units")
        if d == "file" and not self.file:
            raise ValueError("distribution 'file' needs file")
        if d == "lognormal":
            by_moments, by_quantiles = (self.mu, self.sigma), (self.median_units, self.p99_units)
            if all(v is not None for v in by_moments) == all(v is not None for v in by_quantiles) or \
                    any(v is not None for v in by_moments) and any(v is not None for v in by_quantiles):
                raise ValueError("distribution 'lognormal' needs either mu and sigma, or median_units and p99_units")
            if self.median_units is not None and self.p99_units < self.median_units:
                raise ValueError(f"p99_units ({self.p99_units}) is below median_units ({self.median_units})")
            if self.lognormal()[1] > LOGNORMAL_SIGMA_MAX:
                raise ValueError(f"p99_units / median_units gives sigma > {LOGNORMAL_SIGMA_MAX}")
        return self

    def lognormal(self) -> tuple[float, float]:
        """(mu, sigma) of ln(units), from mu/sigma or from the median and the 99th percentile."""
        if self.mu is not None:
            return self.mu, self.sigma
        return math.log(self.median_units), math.log(self.p99_units / self.median_units) / Z99


Z99 = 2.3263478740408408   # the standard normal's 99th percentile


BUDGET = re.compile(r"(max|[0-9]{1,10}) [0-9]{1,10}")   # cpu.agent.budget: "RATE BURST" in us


class AbuserSpec(Strict):
    """An unprivileged neighbour that marks itself to take more than its share (the enforcement's
    adversary, harness/workload/abuser.c). It runs for the whole cell in a cgroup of its own, with
    a budget, next to the agent loop in a sibling cgroup without one: what it gets is bounded by
    its budget, and what the agent keeps is the test of the enforcement."""

    kind: Literal["open-loop", "guards", "storm"] = Field(
        description="open-loop: CPU-bound threads reopening a 20 ms window every 19 ms, never blocking; "
                    "guards: a thread per CPU with a 1 us idle tolerance in 49 ms sleeps (50 ms guards); "
                    "storm: many marked threads in short sleep/compute cycles")
    mark: bool = Field(True, description="false: the same threads unmarked, the stock task to compare with")
    threads: int = Field(0, ge=0, le=1024, description="0: 1 (open-loop), one per CPU (guards), 64 (storm)")
    user: Literal["nobody", "root"] = Field("nobody", description="who it runs as (root has CAP_SYS_NICE)")
    policy: Literal[0, 1, 2] = Field(2, description="kernel.sched_agent_latency for the cell: 0 nobody may mark, "
                                     "1 CAP_SYS_NICE only, 2 anyone within its cgroup's budget")
    budget: Annotated[str, _pattern(BUDGET.pattern, 24, "'RATE BURST' or 'max BURST' in us")] = Field(
        "max 100000", description="the abuser's cpu.agent.budget (boosted plus guarded us per second, and "
                                  "the burst); 'max BURST': no budget")
    sleep_us: int = Field(0, ge=0, le=10_000_000, description="storm: each thread's sleep (0: 1000)")
    compute_us: int = Field(0, ge=0, le=1_000_000, description="storm: each thread's compute (0: 100)")
    cpu: int | None = Field(None, ge=0, le=63, description="open-loop, storm: pin every thread to this CPU (with "
                            "workload.agent_cpu it chooses whether the abuser shares the agent's CPU); "
                            "the guards pin a thread to each CPU themselves")

    @model_validator(mode="after")
    def _guards_pin_themselves(self) -> AbuserSpec:
        if self.kind == "guards" and self.cpu is not None:
            raise ValueError("cpu: the guards pin a thread to each CPU themselves")
        return self


class WorkloadSpec(Strict):
    """The synthetic agent loop: wait -> wake -> compute -> repeat."""

    steps: int = Field(2000, ge=1, le=STEPS_MAX)
    warmup: int = Field(100, ge=0, le=STEPS_MAX)
    agents: int = Field(1, ge=1, le=64)
    compute_units: int = Field(200_000, ge=0, le=COMPUTE_UNITS_MAX,
                               description="fixed work per step, in loop iterations (not time)")
    burst_every: int = Field(0, ge=0, le=STEPS_MAX, description="every Nth step (warm-up included) computes "
                             "burst_units instead: the demand changes, so util_est no longer predicts it (0 = never)")
    burst_units: int = Field(0, ge=0, le=COMPUTE_UNITS_MAX, description="work of a burst step, in loop iterations")
    compute: ComputeSpec | None = Field(None, description="per-step compute from a distribution (uniform, "
                                        "lognormal, file) instead of the fixed compute_units")
    fanout: bool = Field(False, description="multi-agent fan-out / fan-in: one world signals all agents at once and "
                         "waits for every one of them before the next wait (needs agents >= 2)")
    wait: WaitSpec = WaitSpec()
    phases: PhasesSpec = PhasesSpec()
    seed: int = Field(1, ge=0, le=SEED_MAX)
    mark_agent: bool = Field(False, description="mark the agent threads for the agent latency window "
                             "(needs kernel.agent_latency)")
    window_us: int = Field(2000, ge=1, le=20_000, description="longest window, opened at each wakeup")
    window_target_us: int = Field(0, ge=0, le=20_000, description="step latency target: the window asks for "
                                  "the least capacity that meets it (0 = full capacity); at most window_us")
    window_tolerance_us: int = Field(20, ge=0, le=EXIT_LATENCY_MAX_US, description="idle exit latency the agent's "
                                     "CPU may pay while it waits (0 = polling only)")
    window_guard_us: int = Field(10_000, ge=0, le=50_000, description="how long a wait keeps the CPU guarded "
                                 "(0 = no guard)")
    agent_cpu: int | None = Field(None, ge=0, le=63, description="pin the agent threads to this CPU")
    world_cpu: int | None = Field(None, ge=0, le=63, description="pin the world threads to this CPU (with "
                                  "agent_cpu on another, every wakeup crosses CPUs)")
    explicit_windows: bool = Field(False, description="also open/close a window around each step with prctl")
    slice_us: int = Field(0, ge=0, le=100_000, description="the agent's custom EEVDF slice (sched_attr."
                          "sched_runtime; 0 = the default slice; else at least 100, the kernel's bound)")
    hogs: int = Field(0, ge=0, le=64, description="CPU-bound neighbour threads for the run's length")
    adpf_target_us: int = Field(0, ge=0, le=10_000_000, description="the user-space baseline of the production "
                                "approach: an ADPF-style controller moves the agent's uclamp.min by each step's "
                                "latency against this target (0 = off)")
    hog_cpu: int | None = Field(None, ge=0, le=63, description="pin the hogs to this CPU (default: agent_cpu)")
    noise_busy_us: int = Field(0, ge=0, le=1_000_000, description="a noisy neighbour: an unpinned thread busy this "
                               "long, then asleep noise_idle_us, for the run's length (0 = none)")
    noise_idle_us: int = Field(0, ge=0, le=1_000_000, description="the noisy neighbour's sleep between busy spells")
    inject_delay_us: int = Field(0, ge=0, le=INJECT_DELAY_MAX_US, description="sanity check: the world sleeps "
                                 "this long between recording its signal and sending it")
    abuser: AbuserSpec | None = Field(None, description="an unprivileged neighbour abusing the mark, in a "
                                      "sibling cgroup with a budget (the enforcement's test)")
    units_for: Arch | None = Field(None, description="the arch the unit counts (compute_units, burst_units, "
                                   "compute.*_units) are written for: a cell of another arch gets them scaled so "
                                   "that a step computes as long at fmax (a unit is 12.054 ns on x86_64 and "
                                   "6.031 ns on arm64); a cell's record then names its own arch here. "
                                   "Unset: the counts are used as they are on every arch")

    @model_validator(mode="after")
    def _window_needs_mark(self) -> WorkloadSpec:
        given = [n for n in self.window_options_given() if n != "mark_agent"]
        if given and not self.mark_agent:
            raise ValueError(f"{', '.join(given)} need mark_agent: true")
        if self.window_target_us > self.window_us:
            raise ValueError(f"window_target_us ({self.window_target_us}) is longer than window_us "
                             f"({self.window_us})")
        return self

    def window_options_given(self) -> list[str]:
        """The window options this workload asks for: flags that are on, numbers that were set."""
        return [n for n in WINDOW_OPTIONS
                if (getattr(self, n) is True) or (n in self.model_fields_set and getattr(self, n) is not False)]

    @model_validator(mode="after")
    def _slice_bound(self) -> WorkloadSpec:
        if 0 < self.slice_us < 100:
            raise ValueError(f"slice_us {self.slice_us}: the kernel clamps a custom slice to 100..100000 us")
        if self.hog_cpu is not None and not self.hogs:
            raise ValueError("hog_cpu needs hogs")
        return self

    @model_validator(mode="after")
    def _burst_fields(self) -> WorkloadSpec:
        if bool(self.burst_every) != bool(self.burst_units):
            raise ValueError("burst_every and burst_units go together")
        return self

    @model_validator(mode="after")
    def _compute_fields(self) -> WorkloadSpec:
        if self.compute is not None:   # (a record's dump of the spec holds the defaults: not "given")
            default = type(self).model_fields["compute_units"].default
            given = ([n for n in ("burst_every", "burst_units") if getattr(self, n)]
                     + (["compute_units"] if self.compute_units != default else []))
            if given:
                raise ValueError(f"compute sets each step's work: {', '.join(given)} would not be used")
        if bool(self.noise_busy_us) != bool(self.noise_idle_us):
            raise ValueError("noise_busy_us and noise_idle_us go together")
        if self.fanout:
            if self.agents < 2:
                raise ValueError("fanout needs agents >= 2 (one world fans out to several agents)")
            if self.wait.kind in ("nanosleep", "timerfd"):
                raise ValueError(f"fanout needs a world thread; wait kind '{self.wait.kind}' has none")
            if self.inject_delay_us:
                raise ValueError("fanout and inject_delay_us do not go together")
        return self

    def extended_output(self) -> bool:
        """The loop writes its extended steps file (units, missed columns) for these options."""
        return self.compute is not None or self.wait.period_us is not None or self.fanout

    @model_validator(mode="after")
    def _inject_needs_world(self) -> WorkloadSpec:
        if self.inject_delay_us and self.wait.kind in ("nanosleep", "timerfd"):
            raise ValueError(f"inject_delay_us needs a world thread; wait kind '{self.wait.kind}' has none")
        return self


# The workload options that use the agent latency window, which only a CONFIG_AGENT_LATENCY=y
# kernel has (checked per cell by the loader).
WINDOW_OPTIONS = ("mark_agent", "window_us", "window_target_us", "window_tolerance_us", "window_guard_us",
                  "explicit_windows")

ProbeRun = Literal["separate", "in-repeats", "whole-life"]
Probe = Literal["wakeup_latency", "dvfs_ramp", "workqueue_delay", "pagecache", "vfs_metadata", "agent_window",
                "wake_path", "idle_guard"]
# the probes on the agent latency series' own trace events: CONFIG_AGENT_LATENCY=y kernels only
AGENT_PROBES = ("agent_window", "idle_guard")


class CellSpec(Strict):
    """One fully resolved point of the experiment: everything needed to build, boot and run."""

    kernel: KernelSpec = KernelSpec()
    arch: Arch = "x86_64"
    machine: MachineSpec = MachineSpec()
    platform: PlatformSpec = PlatformSpec()
    workload: WorkloadSpec = WorkloadSpec()
    probes: list[Probe] = []
    probe_run: ProbeRun = Field("separate", description="separate: the repeats run without probes (their statistics "
                                "are the cell's) and the probes attach for one more run, which gives their records "
                                "and their overhead; in-repeats: the probes ride on every repeat; whole-life: as "
                                "in-repeats, attached before the abuser starts and stopped after its charge is read")

    @field_validator("probes")
    @classmethod
    def _unique_probes(cls, v: list[str]) -> list[str]:
        return _unique(v, "probe")

    @model_validator(mode="after")
    def _pinned_cpus_exist(self) -> CellSpec:
        for name in ("agent_cpu", "world_cpu", "hog_cpu"):
            cpu = getattr(self.workload, name)
            if cpu is not None and cpu >= self.machine.cpus:
                raise ValueError(f"workload.{name} {cpu} is not a CPU of a {self.machine.cpus}-CPU machine")
        a = self.workload.abuser
        if a is not None and a.cpu is not None and a.cpu >= self.machine.cpus:
            raise ValueError(f"workload.abuser.cpu {a.cpu} is not a CPU of a {self.machine.cpus}-CPU machine")
        return self

    @model_validator(mode="after")
    def _units_on_this_arch(self) -> CellSpec:
        """Scale the workload's unit counts written for `units_for` to this cell's arch, once: the
        result says units_for: <this arch>, so validating a record's spec again changes nothing."""
        w = self.workload
        if w.units_for is None or w.units_for == self.arch:
            return self
        ratio = UNIT_NS_AT_FMAX[w.units_for] / UNIT_NS_AT_FMAX[self.arch]
        data = w.model_dump(exclude_unset=True)   # only what was given, as the file gave it
        data["units_for"] = self.arch

        def scaled(name: str, value: float | None, integer: bool = True):
            if value is None:
                return None
            out = round(value * ratio) if integer else value * ratio
            if out > COMPUTE_UNITS_MAX:
                raise ValueError(f"workload.{name} {value} written for {w.units_for} is {out} units on {self.arch}, "
                                 f"more than {COMPUTE_UNITS_MAX}")
            return out

        c = w.compute
        if c is None:
            data["compute_units"] = scaled("compute_units", w.compute_units)
        elif c.distribution == "file":
            raise ValueError(f"workload.units_for: a compute file's units cannot be scaled to {self.arch} (write "
                             f"the file for {self.arch}, or leave units_for unset)")
        else:
            cd = data["compute"]
            for name in ("min_units", "max_units"):
                if getattr(c, name) is not None:
                    cd[name] = scaled(f"compute.{name}", getattr(c, name))
            for name in ("median_units", "p99_units"):
                if getattr(c, name) is not None:
                    cd[name] = scaled(f"compute.{name}", getattr(c, name), integer=False)
            if c.mu is not None:
                mu = c.mu + math.log(ratio)
                if not 0 <= mu <= math.log(COMPUTE_UNITS_MAX):
                    raise ValueError(f"workload.compute.mu {c.mu} written for {w.units_for} is {mu:.4g} on "
                                     f"{self.arch}, outside 0..ln({COMPUTE_UNITS_MAX})")
                cd["mu"] = mu
        if w.burst_units:
            data["burst_units"] = scaled("burst_units", w.burst_units)
        return self.model_copy(update={"workload": WorkloadSpec.model_validate(data)})

    @model_validator(mode="after")
    def _sched_ext_has_its_kernel(self) -> CellSpec:
        if self.platform.sched_ext is None:
            return self
        if "sched-ext" not in self.kernel.fragments and self.kernel.config.get("CONFIG_SCHED_CLASS_EXT") != "y":
            raise ValueError("platform.sched_ext needs a kernel with CONFIG_SCHED_CLASS_EXT: add 'sched-ext' to "
                             "kernel.fragments")
        return self


class Variant(Strict):
    """A named set of overrides: a baseline or a configuration under test. A mapping value merges
    into the mapping it sets (`set: {kernel: {agent_latency: true}}` keeps the other kernel keys)."""

    name: Name
    set: dict[DottedKey, Any] = {}
    arch: list[Arch] | None = Field(None, min_length=1, description="the arches this variant runs on, of the "
                                    "experiment's (default: all of them); a variant one arch cannot run yet "
                                    "says so here, and the plan has no cell for it there")


class Experiment(Strict):
    """An experiment file: a base cell, matrix axes and variants whose product gives the cells.
    (Names that repeat, in `arch` or `variants`, are reported by the loader at the repeat.)"""

    name: Name
    description: Annotated[str, AfterValidator(_paragraph)] = Field("", max_length=DESCRIPTION_MAX)
    kernel: KernelSpec = KernelSpec()
    arch: list[Arch] = Field(["x86_64"], min_length=1)
    machine: MachineSpec = MachineSpec()
    platform: PlatformSpec = PlatformSpec()
    workload: WorkloadSpec = WorkloadSpec()
    probes: list[Probe] = []
    probe_run: ProbeRun = "separate"
    repeats: int = Field(1, ge=1, le=1000)
    matrix: dict[DottedKey, Annotated[list[Any], Field(min_length=1)]] = Field(
        {}, description="dotted cell field -> values; the cross product gives the cells")
    variants: list[Variant] = []
