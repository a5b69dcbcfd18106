"""Platform presets: real SoC tables, generated from the kernel source so every number is citable.

Each preset is a committed YAML file (`presets/<name>.yaml`): the simulated platform's fields
(opps, dynamic_power_coefficient, leakage_ua, transition_latency_us, cstates) plus where they came
from (`source`, `conventions`) and what the source tree cannot say (`assumptions`: field, value, why).
The files are written by `write_presets()` / `python -m harness presets --extract`, never by hand:
to change an assumption, edit the tables below and regenerate.

What the kernel gives: device-tree OPP tables and `dynamic-power-coefficient` and DT idle states
(arm64), intel_idle's C-state tables (x86). What it does not: leakage, the power of power-gated
states, and for x86 the whole V/f table (intel_pstate asks the hardware).
"""

from __future__ import annotations

import copy
import functools
import math
import posixpath
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from harness.errors import HarnessError, InputError
from harness.platform import dts
from harness.platform.energy import STATE_NAME, PowerModel

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
SPEC_KEYS = ("opps", "dynamic_power_coefficient", "leakage_ua", "transition_latency_us", "cstates")
META_KEYS = ("description", "source", "conventions", "assumptions")
OPPS_MAX = 16                       # the simulated platform's table rides on the kernel command line
STATIC_FRACTION = 0.15              # leakage: static power this share of the active power at fmax

INTEL_IDLE = "drivers/idle/intel_idle.c"
POLL_STATE = "drivers/cpuidle/poll_state.c"
CPUIDLE_PSCI = "drivers/cpuidle/cpuidle-psci.c"
INTEL_PSTATE = "drivers/cpufreq/intel_pstate.c"


class PresetError(HarnessError):
    """The kernel source lacks (or has changed) what a preset is read from."""


# --- what each preset reads, and what it assumes -------------------------------------------------

@dataclass(frozen=True)
class DtCore:
    """An arm64 core described by a device tree: a CPU node with its OPP table and idle states."""

    name: str
    description: str
    dts: str                                   # the file to parse (its quoted includes are followed)
    cpu_label: str
    state_power_mw: dict[str, tuple[float, str]]   # DT idle state name -> (mW, why)


@dataclass(frozen=True)
class IntelCore:
    """An x86 core: intel_idle's C-state table; the V/f table and coefficient are assumptions."""

    name: str
    description: str
    table: str                                 # the cpuidle_state array in intel_idle.c
    opps: tuple[tuple[int, int], ...]          # (kHz, uV)
    opps_why: str
    coefficient: int                           # integer, as the kernel meter takes it
    coefficient_why: str
    state_power_mw: dict[str, tuple[float | str | None, str]]   # None: static power at the lowest OPP


PRESETS: tuple[DtCore | IntelCore, ...] = (
    DtCore("rk3399-a72", "Rockchip RK3399 big core: Cortex-A72 (cluster1, 2 cores), 28 nm HKMG",
           "arch/arm64/boot/dts/rockchip/rk3399.dtsi", "cpu_b0",
           {"cpu-sleep": (5.0, "core power domain off (PSCI power-down), L2 kept: the power switch's "
                               "residual leakage, ~3 % of the core's static power at the lowest OPP"),
            "cluster-sleep": (2.0, "cluster off with its L2: this core's share of the always-on residue")}),
    DtCore("rk3399-a53", "Rockchip RK3399 little core: Cortex-A53 (cluster0, 4 cores), 28 nm HKMG",
           "arch/arm64/boot/dts/rockchip/rk3399.dtsi", "cpu_l0",
           {"cpu-sleep": (1.0, "core power domain off (PSCI power-down), L2 kept: the power switch's "
                               "residual leakage, ~4 % of the core's static power at the lowest OPP"),
            "cluster-sleep": (0.5, "cluster off with its L2: this core's share (one of four) of the residue")}),
    IntelCore("x86-skl-client", "Intel Skylake client core (SKL-S/H/U, e.g. i7-6700K): intel_idle's skl table",
              "skl_cstates",
              ((800_000, 700_000), (1_200_000, 700_000), (1_600_000, 720_000), (2_000_000, 760_000),
               (2_400_000, 820_000), (2_800_000, 890_000), (3_200_000, 970_000), (3_600_000, 1_080_000),
               (4_000_000, 1_250_000)),
              "x86 has no OPP table in the kernel (intel_pstate/HWP asks the hardware): 400 MHz steps from "
              "the 800 MHz LFM to a 4.0 GHz turbo, on a typical client VID curve (flat at a ~0.70 V floor, "
              "rising to ~1.25 V at 4.0 GHz)",
              1600,
              "about 10 W of dynamic power per core at 4.0 GHz / 1.25 V (a 91 W four-core part at all-core "
              "turbo, uncore and graphics excluded)",
              {"POLL": ("active", "the polling loop keeps the core running"),
               "C1": ("clock-gated", "MWAIT C1 stops the core clock at the current voltage"),
               "C1E": (None, "C1 at the lowest P-state's voltage (what C1E adds): the static power at the "
                             "lowest OPP"),
               "C3": (300.0, "core clock and PLL off, caches kept at a retention voltage"),
               "C6": (10.0, "core power-gated, state saved to SRAM: the gate's residual leakage"),
               "C7s": (8.0, "C6 plus the LLC being flushed; per core, the package saves more"),
               "C8": (5.0, "deeper package states: this core's share of the residue"),
               "C9": (3.0, "as C8, with the package rails lower"),
               "C10": (2.0, "as C9, with the package rails off")}),
)


# --- reading the kernel source -------------------------------------------------------------------

class KernelText:
    """Text files of a kernel tree, from a directory or (slower) straight from a tarball."""

    def __init__(self, read: Callable[[str], str], origin: str):
        self._read = read
        self.origin = origin

    def read(self, rel: str) -> str:
        try:
            return self._read(rel)
        except (OSError, KeyError, UnicodeDecodeError) as e:
            raise PresetError(f"{self.origin}: cannot read {rel} ({e})") from e

    def version(self) -> str:
        mk = self.read("Makefile")
        vals = {k: (re.search(rf"^{k}[ \t]*=[ \t]*(\S*)", mk, re.M) or [None, ""])[1]
                for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION")}
        if not vals["VERSION"]:
            raise PresetError(f"{self.origin}: Makefile has no VERSION")
        return f"{vals['VERSION']}.{vals['PATCHLEVEL']}.{vals['SUBLEVEL']}{vals['EXTRAVERSION']}"


def needed_files() -> tuple[set[str], set[str]]:
    """(files, directories whose .dtsi/.dts files are needed): what extract() may read."""
    files = {"Makefile", INTEL_IDLE, POLL_STATE, CPUIDLE_PSCI, INTEL_PSTATE}
    dirs = set()
    for p in PRESETS:
        if isinstance(p, DtCore):
            files.add(p.dts)
            dirs.add(posixpath.dirname(p.dts))
    return files, dirs


def open_tree(tree: Path) -> KernelText:
    """A kernel source directory, or a .tar(.xz/.gz/...) of one (only the needed members are kept)."""
    tree = Path(tree).expanduser()
    if tree.is_dir():
        def read(rel: str) -> str:
            return (tree / rel).read_text(encoding="utf-8")
        return KernelText(read, str(tree))
    if tree.is_file():
        return KernelText(_read_tarball(tree).__getitem__, str(tree))
    raise InputError(f"{tree}: no such kernel tree or tarball")


def _read_tarball(path: Path) -> dict[str, str]:
    files, dirs = needed_files()
    out: dict[str, str] = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = PurePosixPath(m.name).parts
                rel = "/".join(parts[1:])                 # members sit under linux-source-6.12/
                if rel in files or (posixpath.dirname(rel) in dirs and rel.endswith((".dtsi", ".dts"))):
                    f = tf.extractfile(m)
                    if f is not None:
                        out[rel] = f.read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable kernel tarball ({e})") from e
    missing = sorted(files - out.keys())
    if missing:
        raise PresetError(f"{path}: has no {', '.join(missing)}")
    return out


# --- device trees (arm64) ------------------------------------------------------------------------

def _dt_preset(p: DtCore, src: KernelText, version: str) -> dict:
    try:
        tree = dts.parse(p.dts, src.read)
        cpu = tree.label(p.cpu_label)
        coeff = cpu.u32("dynamic-power-coefficient")
        (table_label,) = cpu.refs("operating-points-v2")
        table = tree.label(table_label)
        state_labels = cpu.refs("cpu-idle-states")
        opps, latency_ns, opp_nodes = _dt_opps(table)
        dt_states = [tree.label(lab) for lab in state_labels]
        cstates_dt = [_dt_state(n) for n in dt_states]
    except dts.DtsError as e:
        raise PresetError(f"{p.name}: {e}") from e
    conventions = [
        "opps: opp-hz / 1000 as kHz (as dev_pm_opp_init_cpufreq_table() does), the target (first) cell of "
        "opp-microvolt <target min max>",
        "transition_latency_us: the largest clock-latency-ns of the table (cpufreq-dt takes "
        "dev_pm_opp_get_max_clock_latency()), rounded up to us",
        "cstates: WFI first, as state 0 of drivers/cpuidle/cpuidle-psci.c; then cpu-idle-states in order. "
        "exit_latency_us = entry-latency-us + exit-latency-us (wakeup-latency-us when present) and "
        "target_residency_us = min-residency-us, as drivers/cpuidle/dt_idle_states.c init_state_node(); "
        "the name is the node's name, as the kernel's",
    ]
    if len(opps) > OPPS_MAX:
        opps = _subset(opps)
        conventions.append(f"opps: {len(opp_nodes)} in the table, {OPPS_MAX} kept (the lowest, the highest "
                           "and evenly spaced ones between)")
    wfi = _psci_wfi(src)
    leak, leak_why = _leakage(coeff, opps)
    assumptions = [{"field": "leakage_ua", "value": leak, "why": leak_why}]
    cstates = [wfi]
    for st in cstates_dt:
        if st["name"] not in p.state_power_mw:
            raise PresetError(f"{p.name}: no power assumed for idle state {st['name']} (add it to PRESETS)")
        mw, why = p.state_power_mw[st["name"]]
        st["power_mw"] = mw
        assumptions.append({"field": f"cstates[{st['name']}].power_mw", "value": mw, "why": why})
        cstates.append(st)
    nodes = [f"{cpu.path} (&{p.cpu_label}): {', '.join(cpu.origins)}",
             f"{table.path} (&{table_label}): {', '.join(table.origins)}"]
    nodes += [f"{n.path} (&{lab}): {', '.join(n.origins)}" for n, lab in zip(dt_states, state_labels, strict=True)]
    nodes.append(f"WFI: {wfi.pop('_where')}")
    return {
        "description": p.description,
        "source": {"file": p.dts, "nodes": nodes, "kernel": version},
        "conventions": conventions,
        "assumptions": assumptions,
        "opps": [{"khz": k, "microvolt": v} for k, v in opps],
        "dynamic_power_coefficient": coeff,
        "leakage_ua": leak,
        "transition_latency_us": math.ceil(latency_ns / 1000),
        "cstates": cstates,
    }


def _dt_opps(table: dts.Node) -> tuple[list[tuple[int, int]], int, list[dts.Node]]:
    nodes = [n for n in table.children.values()
             if n.has("opp-hz") and not (n.has("status") and n.string("status") == "disabled")]
    if not nodes:
        raise dts.DtsError(f"{table.where()}: no enabled OPP nodes")
    opps, latency = [], 0
    for n in nodes:
        chunk = n.props["opp-hz"][0]
        if not isinstance(chunk, dts.Cells) or not chunk.items or not isinstance(chunk.items[0], int):
            raise dts.DtsError(f"{n.where()}: opp-hz is not a number")
        hz = chunk.items[0] if chunk.bits == 64 else (chunk.items[0] << 32) | int(chunk.items[1])
        uv = n.ints("opp-microvolt")[0]
        opps.append((hz // 1000, uv))
        if n.has("clock-latency-ns"):
            latency = max(latency, n.u32("clock-latency-ns"))
    opps.sort()
    if len({k for k, _ in opps}) != len(opps):
        raise dts.DtsError(f"{table.where()}: two OPPs at the same frequency")
    return opps, latency, nodes


def _dt_state(n: dts.Node) -> dict:
    if n.has("wakeup-latency-us"):
        exit_us = n.u32("wakeup-latency-us")
    else:
        exit_us = n.u32("entry-latency-us") + n.u32("exit-latency-us")
    name = n.basename
    if not STATE_NAME.match(name):
        raise dts.DtsError(f"{n.where()}: idle state name {name!r} does not match {STATE_NAME.pattern}")
    return {"name": name, "exit_latency_us": exit_us, "target_residency_us": n.u32("min-residency-us")}


def _psci_wfi(src: KernelText) -> dict:
    """State 0 of the PSCI cpuidle driver, as that driver sets it up."""
    text = src.read(CPUIDLE_PSCI)
    name = re.search(r'strcpy\(drv->states\[0\]\.name,\s*"(\w+)"\)', text)
    ex = re.search(r"drv->states\[0\]\.exit_latency\s*=\s*(\d+);", text)
    res = re.search(r"drv->states\[0\]\.target_residency\s*=\s*(\d+);", text)
    if not (name and ex and res):
        raise PresetError(f"{CPUIDLE_PSCI}: state 0 (WFI) is no longer set up as expected")
    line = text.count("\n", 0, ex.start()) + 1
    return {"name": name[1], "exit_latency_us": int(ex[1]), "target_residency_us": int(res[1]),
            "power_mw": "clock-gated", "_where": f"{CPUIDLE_PSCI}:{line}"}


def _subset(opps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    n = len(opps)
    return [opps[i] for i in sorted({round(i * (n - 1) / (OPPS_MAX - 1)) for i in range(OPPS_MAX)})]


def _leakage(coeff: float, opps: list[tuple[int, int]]) -> tuple[int, str]:
    """Leakage current giving a static power STATIC_FRACTION of the active power at fmax, 2 digits."""
    khz, uv = opps[-1]
    dyn_uw = coeff * khz / 1000 * (uv / 1e6) ** 2
    raw = STATIC_FRACTION / (1 - STATIC_FRACTION) * dyn_uw / (uv / 1e6)
    leak = int(float(f"{raw:.2g}"))
    static = leak * uv / 1e6
    why = (f"not in the kernel source; static power {static / (static + dyn_uw):.0%} of the active power at "
           f"fmax ({khz // 1000} MHz, {uv / 1e6:.3f} V), the usual 10-20 % for a mobile or client core "
           f"(STATIC_FRACTION={STATIC_FRACTION}, rounded to 2 digits)")
    return leak, why


# --- intel_idle (x86) ----------------------------------------------------------------------------

def intel_idle_table(text: str, table: str) -> list[dict]:
    """The entries of `static struct cpuidle_state <table>[]` in intel_idle.c: name, latencies, flags, line."""
    m = re.search(rf"static\s+struct\s+cpuidle_state\s+{re.escape(table)}\[\]\s*(?:__initdata\s*)?=\s*\{{", text)
    if not m:
        raise PresetError(f"{INTEL_IDLE}: no table {table}[]")
    i, depth, start, entries = m.end(), 1, None, []
    while depth:
        if i >= len(text):
            raise PresetError(f"{INTEL_IDLE}: table {table}[] never closed")
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 2:
                start = i
        elif c == "}":
            depth -= 1
            if depth == 1 and start is not None:
                entries.append((text.count("\n", 0, start) + 1, text[start + 1:i]))
        i += 1
    out = []
    decl = text.count("\n", 0, m.start()) + 1
    for line, body in entries:
        fields = dict(m.groups() for ln in body.split("\n")
                      if (m := re.match(r"\s*\.(\w+)\s*=\s*(.*?)\s*,?\s*$", ln)))
        if "name" not in fields:
            continue                                   # the { .enter = NULL } terminator
        out.append({"name": fields["name"].strip().strip('"'),
                    "exit_latency_us": int(fields["exit_latency"], 0),
                    "target_residency_us": int(fields["target_residency"], 0),
                    "flags": [f.strip() for f in fields.get("flags", "").split("|") if f.strip()],
                    "line": line, "table_line": decl})
    return out


def _poll_state(src: KernelText) -> dict:
    text = src.read(POLL_STATE)
    name = re.search(r'snprintf\(state->name,\s*CPUIDLE_NAME_LEN,\s*"(\w+)"\)', text)
    ex = re.search(r"state->exit_latency\s*=\s*(\d+);", text)
    res = re.search(r"state->target_residency\s*=\s*(\d+);", text)
    if not (name and ex and res):
        raise PresetError(f"{POLL_STATE}: the polling state is no longer set up as expected")
    return {"name": name[1], "exit_latency_us": int(ex[1]), "target_residency_us": int(res[1]),
            "line": text.count("\n", 0, name.start()) + 1}


def _intel_preset(p: IntelCore, src: KernelText, version: str) -> dict:
    table = intel_idle_table(src.read(INTEL_IDLE), p.table)
    poll = _poll_state(src)
    pstate = src.read(INTEL_PSTATE)
    lat = re.search(r"^#define\s+INTEL_CPUFREQ_TRANSITION_LATENCY\s+(\d+)", pstate, re.M)
    if not lat:
        raise PresetError(f"{INTEL_PSTATE}: no INTEL_CPUFREQ_TRANSITION_LATENCY")
    lat_line = pstate.count("\n", 0, lat.start()) + 1
    conventions = [
        f"cstates: POLL first (the cpuidle core's polling state, {POLL_STATE}), then {p.table}[] in order: "
        ".name, .exit_latency and .target_residency as written",
        "cstates: entries flagged CPUIDLE_FLAG_UNUSABLE in the table are left out (intel_idle never "
        "registers them as usable); states the driver disables at boot on some models are kept",
        "transition_latency_us: intel_pstate's INTEL_CPUFREQ_TRANSITION_LATENCY (ns), rounded up to us",
    ]
    if p.table == "skl_cstates":
        conventions.append("on SKL-S/H with PC10 enabled and SGX off, sklh_idle_state_table_update() marks C8 "
                           "and C9 unusable at boot; the table is kept whole here")
    dropped = [e["name"] for e in table if "CPUIDLE_FLAG_UNUSABLE" in e["flags"]]
    if dropped:
        conventions.append(f"left out as CPUIDLE_FLAG_UNUSABLE: {', '.join(dropped)}")
    entries = [{"name": poll["name"], "exit_latency_us": poll["exit_latency_us"],
                "target_residency_us": poll["target_residency_us"]}]
    entries += [{k: e[k] for k in ("name", "exit_latency_us", "target_residency_us")}
                for e in table if "CPUIDLE_FLAG_UNUSABLE" not in e["flags"]]
    if len(entries) > 10:
        raise PresetError(f"{p.name}: {len(entries)} idle states, more than CPUIDLE_STATE_MAX (10)")
    opps = list(p.opps)
    leak, leak_why = _leakage(p.coefficient, opps)
    assumptions = [
        {"field": "opps", "value": [[k, v] for k, v in opps], "why": p.opps_why},
        {"field": "dynamic_power_coefficient", "value": p.coefficient, "why": p.coefficient_why},
        {"field": "leakage_ua", "value": leak, "why": leak_why},
    ]
    for st in entries:
        if st["name"] not in p.state_power_mw:
            raise PresetError(f"{p.name}: no power assumed for idle state {st['name']} (add it to PRESETS)")
        power, why = p.state_power_mw[st["name"]]
        if power is None:                              # the static power at the lowest OPP, in mW
            power = round(leak * opps[0][1] / 1e6 / 1000, 3)
        st["power_mw"] = power
        assumptions.append({"field": f"cstates[{st['name']}].power_mw", "value": power, "why": why})
    nodes = [f"{p.table}[]: {INTEL_IDLE}:{table[0]['table_line']}",
             f"{poll['name']}: {POLL_STATE}:{poll['line']} (cpuidle_poll_state_init)",
             f"INTEL_CPUFREQ_TRANSITION_LATENCY: {INTEL_PSTATE}:{lat_line}"]
    return {
        "description": p.description,
        "source": {"file": INTEL_IDLE, "nodes": nodes, "kernel": version},
        "conventions": conventions,
        "assumptions": assumptions,
        "opps": [{"khz": k, "microvolt": v} for k, v in opps],
        "dynamic_power_coefficient": p.coefficient,
        "leakage_ua": leak,
        "transition_latency_us": math.ceil(int(lat[1]) / 1000),
        "cstates": entries,
    }


# --- the presets ---------------------------------------------------------------------------------

def extract(tree: Path | KernelText) -> dict[str, dict]:
    """Every preset, read from a kernel tree (directory or tarball): name -> the preset document
    (spec fields plus metadata; `spec()` strips the metadata). Each passes PowerModel.validate()."""
    src = tree if isinstance(tree, KernelText) else open_tree(tree)
    version = src.version()
    out = {}
    for p in PRESETS:
        doc = _dt_preset(p, src, version) if isinstance(p, DtCore) else _intel_preset(p, src, version)
        problems = PowerModel.from_sim(doc).validate()
        if problems:
            raise PresetError(f"{p.name}: the preset is not physically consistent: {'; '.join(problems)}")
        out[p.name] = doc
    return out


class _Flow(dict):
    """A mapping written on one line (OPPs, C-states)."""


class _FlowSeq(list):
    """A list of pairs written as [[a, b], ...]."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_FlowSeq, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _yaml(name: str, doc: dict) -> str:
    doc = dict(doc)
    for key in ("opps", "cstates"):
        doc[key] = [_Flow(x) for x in doc[key]]
    doc["assumptions"] = [{**a, "value": _FlowSeq(a["value"])} if isinstance(a["value"], list) else a
                          for a in doc["assumptions"]]
    head = (f"# {name}: generated from Linux {doc['source']['kernel']} by `python -m harness presets --extract`.\n"
            "# Do not edit: change the assumptions in harness/platform/presets.py and regenerate.\n")
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=False)


def write_presets(tree: Path | KernelText, outdir: Path = PRESETS_DIR) -> list[Path]:
    """Regenerate the preset files from a kernel tree; returns the files written."""
    docs = extract(tree)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in docs.items():
        path = outdir / f"{name}.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(_yaml(name, doc))
        tmp.replace(path)
        written.append(path)
    return written


def names(presets_dir: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in presets_dir.glob("*.yaml"))


def document(name: str, presets_dir: Path = PRESETS_DIR) -> dict:
    """The whole committed preset file (a fresh copy: callers may change it)."""
    if name not in names(presets_dir):
        raise InputError(f"no platform preset {name!r} (presets: {', '.join(names(presets_dir))})")
    path = presets_dir / f"{name}.yaml"
    st = path.stat()
    return copy.deepcopy(_parsed(path, st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, mtime_ns: int, size: int) -> dict:
    """Every spec validation loads a preset: parse each file once (keyed on its mtime and size)."""
    return yaml.safe_load(path.read_text())


def spec(doc: dict) -> dict:
    """The simulated platform's fields of a preset document."""
    return {k: doc[k] for k in SPEC_KEYS}


def load(name: str, presets_dir: Path = PRESETS_DIR) -> dict:
    """The spec mapping of preset `name` (platform.sim fields), metadata stripped."""
    return spec(document(name, presets_dir))


def describe(name: str, presets_dir: Path = PRESETS_DIR) -> dict:
    """Where preset `name` comes from: description, source, conventions, assumptions."""
    doc = document(name, presets_dir)
    return {"name": name, **{k: doc[k] for k in META_KEYS}}


def model(name: str, presets_dir: Path = PRESETS_DIR) -> PowerModel:
    return PowerModel.from_sim(load(name, presets_dir))
