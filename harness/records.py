"""The results contract: typed records of a run and of each cell, and where they live.

The runner writes these records and nothing else reads a run: report, compare and any later
analysis load them from a results directory with `load_run`, without building or booting. Each
record carries `schema_version`; a record of another version, a truncated one or one that does not
validate is a problem of that cell (named, excluded), not of the run.

Layout of a run directory (this module owns these names):

    <run>/run.json                the run index (accumulates over invocations)
    <run>/experiment.yaml         the experiment file the run was made from
    <run>/summary.txt, latency_cdf.png   derived by `report`, re-derivable at any time
    <run>/summary.json            the summary table as a record (RunSummary), derived likewise
    <run>/all_steps.csv, .parquet every measured step of every ok cell, one tidy table (derived)
    <run>/<cell>/result.json      the cell's record
    <run>/<cell>/steps.csv        its measured steps, parsed (us)
    <run>/<cell>/console.log      the guest console, console-N.log for retried attempts
    <run>/<cell>/guest.sh         the script the guest ran (host copy)
    <run>/<cell>/probe-<tool>.csv a probe's parsed records
    <run>/<cell>/decomposition.csv  the traced run's steps split into their parts (dvfs_ramp + wake_path)
    <run>/<cell>/guest/           the guest's share (protocol.SHARE): what the guest wrote, untrusted
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from harness.guest import share
from harness.kernel.cache import atomic_write_text

SCHEMA_VERSION = 1

RUN_INDEX = "run.json"
EXPERIMENT_COPY = "experiment.yaml"
SUMMARY = "summary.txt"
SUMMARY_JSON = "summary.json"
TIDY_CSV = "all_steps.csv"
TIDY_PARQUET = "all_steps.parquet"
CDF_PLOT = "latency_cdf.png"
RUN_LOCK = ".lock"
CELL_RESULT = "result.json"
CELL_STEPS = "steps.csv"
CELL_PROBED_STEPS = "steps-probed.csv"
CELL_DECOMPOSITION = "decomposition.csv"
GUEST_SCRIPT_COPY = "guest.sh"
RECORD_LIMIT = 8 << 20        # a cell record is a few kB; anything near this is not one of ours
STEPS_LIMIT = 1 << 30         # a parsed steps file: ~60 bytes a step, the spec caps a cell at 1e7 steps


def console_log(attempt: int) -> str:
    return "console.log" if attempt == 0 else f"console-{attempt}.log"


def probe_records(name: str) -> str:
    return f"probe-{name}.csv"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields added after records were first written: left out when None, so that a record without
    # them (and every summary derived from one) is written exactly as before they existed.
    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_new_nones(self, handler):
        d = handler(self)
        for k in self.OMIT_IF_NONE:
            if isinstance(d, dict) and d.get(k, 0) is None:
                del d[k]
        return d


class StepStats(Record):
    """Statistics of a cell's measured steps (warm-up excluded), in microseconds."""

    steps: int
    wake_p50_us: float
    wake_p99_us: float
    wake_p999_us: float
    step_p50_us: float
    step_p99_us: float
    compute_p50_us: float
    compute_mean_us: float
    step_p50_repeat_cv: float = Field(description="coefficient of variation of each repeat's step p50")
    deadline_misses: int | None = Field(None, description="periodic loops (wait.period_us): measured steps that "
                                        "ended after the next release")
    deadline_miss_fraction: float | None = None
    fanin_p50_us: float | None = Field(None, description="fan-out loops: signal -> the last agent done, per step")
    fanin_p99_us: float | None = None
    OMIT_IF_NONE = ("deadline_misses", "deadline_miss_fraction", "fanin_p50_us", "fanin_p99_us")


class Frontier(Record):
    """The cell against the physical frontier: the least energy its platform needs for one step of
    the measured work and wait within the measured latency (harness/platform/frontier.py), on the
    agent's CPU. eta = bound / measured: 1 is on the frontier."""

    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ("per_step", "clamped")

    latency_us: float = Field(description="mean step latency (signal -> step done), measured steps")
    period_us: float = Field(description="guest time per step (wait + step)")
    step_cycles: float = Field(description="the step's compute (the workload's units) in simulated cycles")
    other_cycles: float = Field(description="the rest of what tasks ran on the agent CPU per step (meter)")
    energy_uj: float = Field(description="measured, agent CPU, per step")
    bound_uj: float
    eta: float
    eta_by_repeat: list[float]
    state: str = Field(description="the idle state the bound idles in (per_step: the most steps')")
    opps_khz: list[int] = Field(description="the OPPs the bound computes at (per_step: any step's)")
    per_step: int | None = Field(None, description="work that varies from step to step: bound_uj is the mean "
                                 "of this many steps' own bounds (their units, their latencies), step_cycles "
                                 "their mean work; None: one bound for the cell's one step")
    clamped: int | None = Field(None, description="per_step: steps whose calibrated work did not fit their "
                                "measured latency at fmax after the shallowest non-polling exit (a unit's cost "
                                "is known to about 0.5 %), bounded with the work that fits")


class PlatformSummary(Record):
    """The platform's energy meter and residency over all repeats: over their measured steps when
    `meter` is "steps", over whole repeats (warm-up and the run's start and end included) when it
    is "repeat"."""

    energy_uj: int
    energy_per_step_uj: float | None
    energy_per_step_by_repeat_uj: list[float]
    avg_power_mw: float | None
    elapsed_s: float
    active_fraction: float
    freq_residency: dict[str, float]
    idle_residency: dict[str, float]
    idle_entries: dict[str, int]
    period_per_step_by_repeat_us: list[float] = Field([], description="wall (guest) time per step")
    agent_cpu: int | None = Field(None, description="the CPU the agent was pinned to; the agent_* figures are its")
    agent_energy_per_step_by_repeat_uj: list[float] = []
    agent_cycles_per_step_by_repeat: list[float] = Field([], description="cycles tasks ran on the agent's CPU")
    agent_active_per_step_by_repeat_us: list[float] = Field([], description="agent CPU outside idle states "
                                                            "(tasks, interrupts, exits, polling)")
    agent_idle_per_step_by_repeat_us: list[float] = []
    frontier: Frontier | None = None
    energy_source: str = Field("simulated", description="simulated (the sim platform's meter), rapl, hwmon, "
                               "hwmon-power-sampled, or none (a real target without a sensor: no energy figures)")
    energy_domains: list[str] = Field([], description="the counters the energy came from (RAPL zones, hwmon sensors)")
    meter: Literal["steps", "repeat"] = Field(
        "repeat", description="what the figures cover: steps (the loop's own meter, read as the first measured "
        "step begins and the last one ends) or repeat (the shell's snapshots around the whole run: warm-up, "
        "process start and exit and the snapshots themselves counted; records older than the loop's meter)")
    repeat_energy_per_step_by_repeat_uj: list[float] = Field(
        [], description="with meter steps: the whole-repeat snapshots' energy per step (warm-up steps counted), "
        "what the figures were before the loop metered itself")


class TargetInfo(Record):
    """The remote machine a cell ran on (harness/target/): who it is and what it ran."""

    name: str
    url: str
    fleet: str | None = Field(None, description="the fleet the cell was spread over, when machine.target names one")
    arch: str | None = None
    cpu_model: str | None = None
    board: str | None = None
    cpus: str | None = None
    kernel_release: str | None = None
    kernel_version: str | None = None
    cpufreq_driver: str | None = None
    cpufreq_governor: str | None = None
    cpuidle_driver: str | None = None
    cpuidle_governor: str | None = None
    cpuidle_states: str | None = None
    energy_source: str | None = None
    facts: dict[str, str] = {}


class Decomposition(Record):
    """Where the traced run's steps went (harness/analysis/decompose.py): the parts' mean and p50 in
    us over the steps a run of the agent covers, and how well the parts sum to the step."""

    steps: int = Field(description="measured steps of the traced run")
    decomposed: int = Field(description="steps a traced run of the agent covers (the others are left out)")
    woken: int = Field(description="steps whose agent slept and was seen woken after the signal")
    cstate_exits: int = Field(description="steps with an idle exit on the wake path")
    compute_source: Literal["calibration", "timeline"] = Field(
        description="calibration: compute = units x the arch's cost of a unit at fmax, independent of the "
                    "timeline; timeline: no calibration, the frequency integral stands for it")
    tolerance: float = Field(description="the check: |sum / step - 1| at p50 within this")
    sum_ratio_p50: float | None = None
    sum_ratio_p5: float | None = None
    sum_ratio_p95: float | None = None
    within_tolerance: bool | None = None
    step_mean_us: float | None = None
    step_p50_us: float | None = None
    mean_us: dict[str, float] = Field({}, description="part -> mean over the decomposed steps (means add up)")
    p50_us: dict[str, float] = {}
    residual_mean_us: float | None = Field(None, description="mean of step - sum of the parts")


class Attempt(Record):
    outcome: str
    reason: str
    console: str
    wall_s: float
    command: list[str] = Field([], description="the host command that ran the guest (vng's argv)")


class KernelInfo(Record):
    key: str
    request: str
    release: str | None = None
    image: str


class GuestInfo(Record):
    backend: str
    accel: str
    accel_reason: str
    timing: str
    timing_label: str
    cpu_model: str
    host: dict[str, str]
    rootfs: str | None = None
    workload_dir: str
    kernel_cmdline: list[str]
    platform_requested: dict[str, Any]
    boot_to_workload_s: float | None = None
    boot_to_workload_wall_s: float | None = None
    status: dict[str, str] = {}
    platform: Literal["simulated", "real"] = "simulated"


Status = Literal["ok", "failed"]


class AbuserResult(Record):
    """What the abuser did and what its cgroup was charged (the budget's bound is checked against
    these: boosted_usec + guarded_usec <= rate x seconds + burst)."""

    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ("cpu",)

    kind: Literal["open-loop", "guards", "storm"]
    mark: bool
    marked: int = Field(description="threads that could mark themselves")
    mark_errno: int = Field(description="the first refusal's errno (1: EPERM), 0 if none")
    threads: int
    seconds: float
    work: int = Field(description="loop iterations of fixed work, all threads")
    cpu: int | None = Field(None, description="the CPU every thread was pinned to (None: not pinned)")
    stat: dict[str, int] = Field(description="its cgroup's cpu.agent.stat at its end")
    budget: str = Field(description="its cgroup's cpu.agent.budget as read back")
    agent_stat: dict[str, int] = Field(description="the agent's sibling cgroup's cpu.agent.stat")
    # the independent source: the platform over the abuser's whole life (its snapshots)
    elapsed_s: float = Field(description="guest time between the abuser's two platform snapshots")
    energy_uj: int
    freq_time_s: dict[str, float] = Field(description="kHz -> CPU-seconds at that OPP (cpufreq time_in_state)")
    busy_freq_time_s: dict[str, float] = Field(default_factory=dict, description="kHz -> CPU-seconds a task ran at "
                                               "that OPP (the meter's busy_time_in_state; empty on older kernels)")
    cpu_busy_freq_time_s: dict[str, float] = Field(default_factory=dict, description="the same for the CPU the "
                                                   "abuser was pinned to alone (empty if it was not)")
    idle_time_s: dict[str, float] = Field(description="idle state -> CPU-seconds in it (cpuidle)")

    @property
    def work_per_s(self) -> float:
        return self.work / self.seconds if self.seconds > 0 else 0.0


class CellResult(Record):
    """One cell of a run: what was asked, what ran where, and what came out."""

    schema_version: Literal[1] = SCHEMA_VERSION
    experiment: str
    run_id: str
    cell: str
    arch: str
    variant: str
    axes: dict[str, Any]
    status: Status
    failure: str | None = Field(None, description="kind of failure: kernel-build, boot-failed, panic, hang, "
                                "workload-failed, probe-failed, platform-failed, splat, output-unreadable; on a "
                                "remote target also target-unreachable, host-key, auth, target-lost, target-failed, "
                                "target-unusable, and with kernel deploy deploy-failed, target-down")
    reason: str = ""
    fingerprint: str | None = None
    spec: dict[str, Any]
    repeats: int
    kernel: KernelInfo | None = None
    guest: GuestInfo | None = None
    target: TargetInfo | None = None
    attempts: list[Attempt] = []
    infra_failures: int = 0
    stats: StepStats | None = None
    platform: PlatformSummary | None = None
    probes: dict[str, dict[str, Any]] = {}
    probes_pending: list[str] = []
    probed_run: StepStats | None = None
    probe_overhead: dict[str, float] = {}
    abuser: AbuserResult | None = None
    decomposition: Decomposition | None = Field(None, description="the traced run's per-step decomposition "
                                                "(cells probed with dvfs_ramp and wake_path)")
    cell_wall_s: float | None = None
    finished: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    OMIT_IF_NONE = ("decomposition",)


class CellEntry(Record):
    arch: str
    variant: str
    axes: dict[str, Any]
    status: Status
    reason: str = ""
    finished: str


class Invocation(Record):
    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ("jobs",)
    started: str
    finished: str | None = None
    wall_s: float | None = None
    cells: list[str]
    interrupted: bool = False
    jobs: int | None = Field(None, description="local virtual-time guests booted at a time (None: one)")


class RunIndex(Record):
    """Every cell a run directory holds a record for, over all the invocations that wrote it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    experiment: str
    run_id: str
    experiment_sha256: str
    cells_total: int
    complete: bool = Field(False, description="every cell of the experiment has an ok record")
    cells: dict[str, CellEntry] = {}
    invocations: list[Invocation] = []


class SummaryCell(Record):
    """One row of the run summary: a cell's headline figures (None where the cell has none)."""

    cell: str
    arch: str | None = None
    variant: str | None = None
    axes: dict[str, Any] = {}
    status: Literal["ok", "failed", "unusable"]
    failure: str | None = None
    reason: str = ""
    accel: str | None = None
    timing: str | None = None
    repeats: int | None = None
    cell_wall_s: float | None = None
    stats: StepStats | None = None
    energy_per_step_uj: float | None = None
    avg_power_mw: float | None = None
    eta: float | None = Field(None, description="frontier bound / measured energy (1 is on the frontier)")
    probe_overhead_p50: float | None = None
    decomposition: Decomposition | None = None
    OMIT_IF_NONE = ("decomposition",)


class RunSummary(Record):
    """summary.json: what summary.txt shows, typed, for scripts that would otherwise parse the table.
    Derived from the records by `report` (and at the end of every run), never read back by the harness."""

    schema_version: Literal[1] = SCHEMA_VERSION
    experiment: str
    run_id: str
    complete: bool | None = Field(None, description="run.json's flag; None when the index is unusable")
    cells: list[SummaryCell]
    generated: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())


class RecordError(ValueError):
    """A record that cannot be used: missing, truncated, not ours, another schema version."""


def write(path: Path, record: Record) -> None:
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")


def read_bounded(path: Path, limit: int) -> bytes:
    """A file of a run directory, read the way the share is (a run directory may be shared, copied
    or tampered with): no link followed, no device opened, regular files only, at most `limit`."""
    try:
        return share.read_bytes(path, limit)
    except share.ShareError as e:
        raise RecordError(str(e)) from None


def read(path: Path, model: type[Record]) -> Record:
    """A record from disk; links and oversized files are refused."""
    data = read_bounded(path, RECORD_LIMIT)
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path.name}: not JSON ({e.msg if hasattr(e, 'msg') else e}); truncated?") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{path.name}: not a record")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{path.name}: schema_version {obj.get('schema_version')!r}, this harness reads "
                          f"{SCHEMA_VERSION}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise RecordError(f"{path.name}: {where}: {first['msg']} ({e.error_count()} problem(s))") from None
