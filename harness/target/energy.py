"""Real energy, from the counters a target's snapshots hold (the guest script's `snapshot`
greps them on a real target, protocol.REAL_METER_GLOBS, as does the loop's own meter):

- RAPL through powercap: each top-level zone's `energy_uj` (package domains, `intel-rapl:N`; the
  sub-zones core/uncore/dram are inside their package's figure and not added again; the MMIO
  interface `intel-rapl-mmio` repeats the package's and is skipped). The counter wraps at
  `max_energy_range_uj`: a later value below the earlier one is a wrap, counted once (a repeat
  longer than one wrap period, about 60 s on a desktop at full power, would undercount).
- hwmon: a sensor's `energyN_input` (uJ, cumulative) where present; else `powerN_input` (uW,
  instantaneous), as the mean of the two samples times the elapsed time: a crude estimate,
  labelled as such.
- none: no sensor. Energy figures stay empty (None), never 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_RAPL = re.compile(r"^/sys/class/powercap/([A-Za-z0-9:_-]{1,40})/(name|energy_uj|max_energy_range_uj)$")
_HWMON = re.compile(r"^/sys/class/hwmon/(hwmon[0-9]{1,4})/(name|(?:power|energy)[0-9]{1,3}_input)$")
_NUM = re.compile(r"^[0-9]{1,20}$")
_TOP_ZONE = re.compile(r"^[a-z]+-rapl:[0-9]+$")   # intel-rapl:0, amd-rapl:0 (not intel-rapl:0:1, not -mmio)


@dataclass
class Counters:
    rapl: dict[str, tuple[int, int]] = field(default_factory=dict)    # zone -> (energy_uj, max range)
    names: dict[str, str] = field(default_factory=dict)                # zone or hwmon -> its name
    hwmon_energy: dict[str, int] = field(default_factory=dict)         # hwmonN/energyM_input -> uJ
    hwmon_power: dict[str, int] = field(default_factory=dict)          # hwmonN/powerM_input -> uW
    uptime_s: float = 0.0


def parse(text: str) -> Counters:
    c = Counters()
    energy: dict[str, int] = {}
    ranges: dict[str, int] = {}
    for line in text.splitlines()[:20_000]:
        path, _, value = line.partition(":")
        if path.startswith("/sys/class/powercap/"):   # zone names hold ':' : split at the leaf's
            m = re.match(r"^(/sys/class/powercap/[^/]{1,40}/[a-z_]{1,24}):(.*)$", line)
            if not m:
                continue
            path, value = m.group(1), m.group(2)
        value = value.strip()
        if path == "uptime":
            try:
                c.uptime_s = float(value)
            except ValueError:
                pass
            continue
        if m := _RAPL.match(path):
            zone, leaf = m.groups()
            if leaf == "name":
                c.names[zone] = value[:40]
            elif _NUM.match(value):
                (energy if leaf == "energy_uj" else ranges)[zone] = int(value)
        elif m := _HWMON.match(path):
            dev, leaf = m.groups()
            if leaf == "name":
                c.names[dev] = value[:40]
            elif _NUM.match(value):
                (c.hwmon_energy if leaf.startswith("energy") else c.hwmon_power)[f"{dev}/{leaf}"] = int(value)
    for zone, e in energy.items():
        if _TOP_ZONE.match(zone):
            c.rapl[zone] = (e, ranges.get(zone, 0))
    return c


def available(c: Counters) -> list[str]:
    """The sources these counters offer, best first."""
    out = []
    if c.rapl:
        out.append("rapl")
    if c.hwmon_energy or c.hwmon_power:
        out.append("hwmon")
    return out


@dataclass(frozen=True)
class Reading:
    source: str                  # rapl | hwmon | hwmon-power-sampled | none
    energy_uj: int | None
    domains: tuple[str, ...] = ()


def between(before: Counters, after: Counters, wanted: str = "auto") -> Reading:
    """Energy between two snapshots from the source asked for (auto: the best there is)."""
    have = [s for s in available(before) if s in available(after)]
    source = have[0] if wanted == "auto" and have else wanted
    if source == "rapl" and "rapl" in have:
        total = 0
        for zone, (e1, rng) in after.rapl.items():
            if zone not in before.rapl:
                continue
            e0 = before.rapl[zone][0]
            total += e1 - e0 if e1 >= e0 else e1 + (rng or 0) - e0
        return Reading("rapl", total, tuple(f"{z} ({after.names.get(z, '?')})" for z in sorted(after.rapl)))
    if source == "hwmon" and "hwmon" in have:
        keys = sorted(set(before.hwmon_energy) & set(after.hwmon_energy))
        if keys:
            return Reading("hwmon", sum(max(0, after.hwmon_energy[k] - before.hwmon_energy[k]) for k in keys),
                           tuple(f"{k} ({after.names.get(k.split('/')[0], '?')})" for k in keys))
        keys = sorted(set(before.hwmon_power) & set(after.hwmon_power))
        dt = after.uptime_s - before.uptime_s
        if keys and dt > 0:
            mean_uw = sum((before.hwmon_power[k] + after.hwmon_power[k]) / 2 for k in keys)
            return Reading("hwmon-power-sampled", round(mean_uw * dt),
                           tuple(f"{k} ({after.names.get(k.split('/')[0], '?')})" for k in keys))
    return Reading("none", None)
