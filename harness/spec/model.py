"""The experiment schema: what a YAML experiment may say, checked strictly.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored knob.
A `CellSpec` is one fully resolved point of the matrix: the kernel to build, the machine to
boot, the platform knobs, the workload and the probes. An `Experiment` is a base cell plus
the matrix axes and named variants (baselines) that expand into cells.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Arch = Literal["x86_64", "arm64"]
ARCHES: tuple[str, ...] = ("x86_64", "arm64")
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=64)]
ConfigSymbol = Annotated[str, StringConstraints(pattern=r"^CONFIG_[A-Z0-9_]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KernelSpec(Strict):
    """Which kernel a cell boots. Every field feeds the build's content-addressed cache key."""

    source: str = Field("debian", description="'debian' (linux-source-6.12), a git tree or a tarball")
    series: list[Name] = Field(["sim-platform", "agent-latency"],
                               description="patch series under kernel/patches/, in order")
    fragments: list[Name] = Field(["base", "tracing", "platform", "sim-platform"],
                                  description="kernel/configs/<name>.config, merged in order "
                                              "(the arch fragment is added)")
    agent_latency: bool = Field(False, description="CONFIG_AGENT_LATENCY on or off")
    debug: bool = Field(False, description="add kernel/configs/debug.config (lockdep, KASAN)")
    config: dict[ConfigSymbol, str] = Field({}, description="extra CONFIG_X: value items, applied last and checked")

    @field_validator("config", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ("y" if x is True else "n" if x is False else str(x)) for k, x in v.items()}
        return v

    @property
    def variant(self) -> str:
        """Short label of the kernel variant, used by `build-kernel --config`."""
        label = "agent-on" if self.agent_latency else "agent-off"
        return label + ("+debug" if self.debug else "")


class MachineSpec(Strict):
    """The virtual machine a cell runs in."""

    cpus: int = Field(2, ge=1, le=64)
    memory: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[MG]$")] = "1G"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    timing: Literal["auto", "virtual", "realtime"] = Field(
        "auto", description="virtual = QEMU -icount (TCG only); auto = virtual under TCG, realtime under KVM")
    icount_shift: int = Field(0, ge=0, le=10)
    arm64_cpu: Literal["cortex-a57", "cortex-a72", "max"] = "cortex-a57"
    cmdline: list[str] = []
    boot_timeout_s: int = Field(300, ge=10, description="power-on to workload start")
    run_timeout_s: int = Field(1800, ge=10)

    @model_validator(mode="after")
    def _virtual_needs_tcg(self) -> MachineSpec:
        if self.timing == "virtual" and self.accel == "kvm":
            raise ValueError("timing 'virtual' (QEMU -icount) needs TCG, not accel 'kvm'")
        return self


class OPP(Strict):
    khz: int = Field(gt=0)
    power_mw: float = Field(ge=0)


class CState(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", max_length=15)]
    exit_latency_us: int = Field(ge=0)
    target_residency_us: int = Field(ge=0)
    power_mw: float = Field(0, ge=0)


class SimPlatform(Strict):
    """Simulated cpufreq/cpuidle platform parameters (the guest has no real DVFS or C-states)."""

    opps: list[OPP] = [OPP(khz=800_000, power_mw=150), OPP(khz=1_600_000, power_mw=450),
                       OPP(khz=2_400_000, power_mw=1000), OPP(khz=3_200_000, power_mw=1800)]
    transition_latency_us: int = Field(50, ge=0, description="request -> new frequency in effect")
    steal_period_us: int = Field(250, ge=10, le=100_000,
                                 description="period of the time stealing that emulates f < fmax (smaller "
                                             "is more exact for short runs, costs more interrupts)")
    cstates: list[CState] = [CState(name="POLL", exit_latency_us=0, target_residency_us=0, power_mw=600),
                             CState(name="C1", exit_latency_us=2, target_residency_us=2, power_mw=300),
                             CState(name="C3", exit_latency_us=60, target_residency_us=200, power_mw=100),
                             CState(name="C6", exit_latency_us=250, target_residency_us=1000, power_mw=20)]

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
        return v


class PlatformSpec(Strict):
    """Power-management knobs applied and verified inside the guest before the loop starts."""

    governor: Literal["schedutil", "performance", "powersave", "userspace"] = "schedutil"
    userspace_khz: int | None = Field(None, gt=0, description="frequency for the userspace governor")
    rate_limit_us: int | None = Field(None, ge=0, description="schedutil rate_limit_us")
    idle_governor: Literal["menu", "teo", "ladder"] = "menu"
    max_cstate: int | None = Field(None, ge=0, description="deepest allowed C-state index")
    disabled_cstates: list[str] = []
    pm_qos_latency_us: int | None = Field(None, ge=0, description="hold /dev/cpu_dma_latency at this value")
    idle_poll: bool = Field(False, description="idle=poll (x86_64) / nohlt (arm64)")
    uclamp_min: int | None = Field(None, ge=0, le=1024, description="sched_setattr uclamp.min on the agent")
    sim: SimPlatform = SimPlatform()

    @model_validator(mode="after")
    def _knobs_consistent(self) -> PlatformSpec:
        if self.governor == "userspace":
            if self.userspace_khz is None:
                raise ValueError("governor 'userspace' needs userspace_khz")
            if self.userspace_khz not in [o.khz for o in self.sim.opps]:
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
        return self


class WaitSpec(Strict):
    """How the agent waits for the world between steps."""

    kind: Literal["futex", "eventfd", "pipe", "timerfd", "epoll", "io_uring", "nanosleep"] = "futex"
    distribution: Literal["fixed", "uniform", "exponential", "file"] = "fixed"
    us: float = Field(2000, ge=0, description="fixed value, or the mean for exponential")
    min_us: float | None = Field(None, ge=0)
    max_us: float | None = Field(None, ge=0)
    file: str | None = Field(None, description="one wait time in us per line, for distribution 'file'")

    @model_validator(mode="after")
    def _distribution_fields(self) -> WaitSpec:
        if self.distribution == "uniform":
            if self.min_us is None or self.max_us is None or self.min_us > self.max_us:
                raise ValueError("distribution 'uniform' needs min_us <= max_us")
        if self.distribution == "file" and not self.file:
            raise ValueError("distribution 'file' needs file")
        return self


class PhasesSpec(Strict):
    """Optional per-step phases that exercise memory, the page cache and path lookup."""

    touch_pages: int = Field(0, ge=0, description="fresh pages faulted in per step")
    read_kb: int = Field(0, ge=0, description="file data read per step")
    drop_cache_every: int = Field(0, ge=0, description="evict the file every N steps (page cache misses)")
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


class WorkloadSpec(Strict):
    """The synthetic agent loop: wait -> wake -> compute -> repeat."""

    steps: int = Field(2000, ge=1, le=50_000_000)
    warmup: int = Field(100, ge=0, le=50_000_000)
    agents: int = Field(1, ge=1, le=64)
    compute_units: int = Field(200_000, ge=0, description="fixed work per step, in loop iterations (not time)")
    burst_every: int = Field(0, ge=0, description="every Nth step (warm-up included) computes burst_units "
                             "instead: the demand changes, so util_est no longer predicts it (0 = never)")
    burst_units: int = Field(0, ge=0, description="work of a burst step, in loop iterations")
    wait: WaitSpec = WaitSpec()
    phases: PhasesSpec = PhasesSpec()
    seed: int = 1
    mark_agent: bool = Field(False, description="mark the agent threads for the agent latency window")
    window_us: int = Field(0, ge=0, le=20_000,
                           description="window length opened at each wakeup (0 = kernel default, 2000)")
    window_tolerance_us: int = Field(0, ge=0, description="idle exit latency the agent's CPU may pay while "
                                     "it waits (0 = kernel default, 20)")
    window_guard_us: int = Field(0, ge=0, le=50_000, description="how long a wait keeps the CPU guarded "
                                 "(0 = kernel default, 10000)")
    agent_cpu: int | None = Field(None, ge=0, description="pin the agent threads to this CPU")
    world_cpu: int | None = Field(None, ge=0, description="pin the world threads to this CPU (with agent_cpu "
                                  "on another, every wakeup crosses CPUs)")
    explicit_windows: bool = Field(False, description="also open/close a window around each step with prctl")
    inject_delay_us: int = Field(0, ge=0, description="sanity check: the world sleeps this long between "
                                 "recording its signal and sending it")

    @model_validator(mode="after")
    def _window_needs_mark(self) -> WorkloadSpec:
        given = [n for n in ("window_us", "window_tolerance_us", "window_guard_us", "explicit_windows")
                 if getattr(self, n)]
        if given and not self.mark_agent:
            raise ValueError(f"{', '.join(given)} need mark_agent: true")
        return self

    @model_validator(mode="after")
    def _burst_fields(self) -> WorkloadSpec:
        if bool(self.burst_every) != bool(self.burst_units):
            raise ValueError("burst_every and burst_units go together")
        return self

    @model_validator(mode="after")
    def _inject_needs_world(self) -> WorkloadSpec:
        if self.inject_delay_us and self.wait.kind in ("nanosleep", "timerfd"):
            raise ValueError(f"inject_delay_us needs a world thread; wait kind '{self.wait.kind}' has none")
        return self


ProbeRun = Literal["separate", "in-repeats"]
Probe = Literal["wakeup_latency", "dvfs_ramp", "workqueue_delay", "pagecache", "vfs_metadata", "agent_window"]


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
                                "and their overhead; in-repeats: the probes ride on every repeat")

    @model_validator(mode="after")
    def _pinned_cpus_exist(self) -> CellSpec:
        for name in ("agent_cpu", "world_cpu"):
            cpu = getattr(self.workload, name)
            if cpu is not None and cpu >= self.machine.cpus:
                raise ValueError(f"workload.{name} {cpu} is not a CPU of a {self.machine.cpus}-CPU machine")
        return self


class Variant(Strict):
    """A named set of overrides: a baseline or a configuration under test."""

    name: Name
    set: dict[str, Any] = {}


class Experiment(Strict):
    """An experiment file: a base cell, matrix axes and variants whose product gives the cells."""

    name: Name
    description: str = ""
    kernel: KernelSpec = KernelSpec()
    arch: list[Arch] = Field(["x86_64"], min_length=1)
    machine: MachineSpec = MachineSpec()
    platform: PlatformSpec = PlatformSpec()
    workload: WorkloadSpec = WorkloadSpec()
    probes: list[Probe] = []
    probe_run: ProbeRun = "separate"
    repeats: int = Field(1, ge=1, le=1000)
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        {}, description="dotted cell field -> values; the cross product gives the cells")
    variants: list[Variant] = []

    @field_validator("arch")
    @classmethod
    def _unique_arch(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("arch lists an architecture twice")
        return v

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, v: list[Variant]) -> list[Variant]:
        names = [x.name for x in v]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return v
