"""The physical CPU power model the simulated platform meters, in one place.

Dynamic power follows the kernel Energy Model's device-tree convention (`dynamic-power-coefficient`,
uW/MHz/V^2, drivers/opp/of.c): P_dyn = C * f[MHz] * V^2. Static power is leakage current times
voltage. Idle states draw either the active power (POLL spins), the static power at the OPP the CPU
idled at (WFI/C1 stop the clock, keep the voltage) or a fixed power (retention / power-gated states,
whose rail is no longer the OPP's).

The float methods are the model; the `kernel_*` methods repeat the simulated kernel meter's integer
arithmetic, so tests can show both agree to well under a percent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

PowerSpec = float | Literal["clock-gated", "active"]
STATE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,15}$")


@dataclass(frozen=True)
class Opp:
    khz: int
    microvolt: int


@dataclass(frozen=True)
class State:
    name: str
    exit_latency_us: int
    target_residency_us: int
    power_mw: PowerSpec


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


@dataclass(frozen=True)
class PowerModel:
    opps: tuple[Opp, ...]            # ascending khz
    dynamic_power_coefficient: float  # uW / MHz / V^2
    leakage_ua: float                # static power (uW) = leakage_ua * V
    states: tuple[State, ...]        # shallowest first; POLL (if any) first with power "active"

    def __post_init__(self):
        object.__setattr__(self, "opps", tuple(self.opps))
        object.__setattr__(self, "states", tuple(self.states))

    @classmethod
    def from_sim(cls, sim: Any) -> PowerModel:
        """From the spec's SimPlatform (or any object or mapping with its fields: opps, cstates, ...)."""
        opps = tuple(Opp(int(_get(o, "khz")), int(_get(o, "microvolt"))) for o in _get(sim, "opps"))
        states = []
        for c in _get(sim, "cstates"):
            p = _get(c, "power_mw")
            states.append(State(str(_get(c, "name")), int(_get(c, "exit_latency_us")),
                                int(_get(c, "target_residency_us")), p if isinstance(p, str) else float(p)))
        return cls(opps, _get(sim, "dynamic_power_coefficient"), _get(sim, "leakage_ua"), tuple(states))

    # --- lookups -------------------------------------------------------------------------------

    def opp(self, khz: int) -> Opp:
        for o in self.opps:
            if o.khz == khz:
                return o
        raise ValueError(f"no OPP at {khz} kHz (OPPs: {[o.khz for o in self.opps]})")

    def state(self, name: str) -> State:
        for s in self.states:
            if s.name == name:
                return s
        raise ValueError(f"no idle state {name!r} (states: {[s.name for s in self.states]})")

    # --- power (float model) -------------------------------------------------------------------

    def dynamic_uw(self, opp: Opp) -> float:
        return self.dynamic_power_coefficient * (opp.khz / 1000) * (opp.microvolt / 1e6) ** 2

    def static_uw(self, opp: Opp) -> float:
        return self.leakage_ua * opp.microvolt / 1e6

    def active_uw(self, opp: Opp) -> float:
        return self.dynamic_uw(opp) + self.static_uw(opp)

    def idle_uw(self, state: State | str, opp: Opp) -> float:
        """Power in `state` while the CPU sits at `opp` (the OPP it last ran at)."""
        s = self.state(state) if isinstance(state, str) else state
        if s.power_mw == "active":
            return self.active_uw(opp)
        if s.power_mw == "clock-gated":
            return self.static_uw(opp)
        return float(s.power_mw) * 1000

    def energy_per_cycle_nj(self, opp: Opp) -> float:
        """uW / kHz = nJ per cycle."""
        return self.active_uw(opp) / opp.khz

    # --- power (the simulated kernel's integer arithmetic) -------------------------------------

    def _kernel_ints(self) -> tuple[int, int]:
        c, leak = self.dynamic_power_coefficient, self.leakage_ua
        if c != int(c) or leak != int(leak):
            raise ValueError(f"the kernel meter takes integer coefficients, not C={c}, leakage_ua={leak}")
        return int(c), int(leak)

    def kernel_dynamic_uw(self, opp: Opp) -> int:
        c, _ = self._kernel_ints()
        mv, mhz = opp.microvolt // 1000, opp.khz // 1000
        return (c * mv * mv * mhz) // 1_000_000

    def kernel_static_uw(self, opp: Opp) -> int:
        _, leak = self._kernel_ints()
        return (leak * opp.microvolt) // 1_000_000

    def kernel_active_uw(self, opp: Opp) -> int:
        return self.kernel_dynamic_uw(opp) + self.kernel_static_uw(opp)

    # --- the OPP table's shape -----------------------------------------------------------------

    def hull_opps(self, opps: Iterable[Opp] | None = None) -> tuple[Opp, ...]:
        """The OPPs on the lower convex hull of (1/f, energy per cycle), ascending khz.

        Mixing two OPPs in time gives any point on the segment between them (weights: the cycles run
        at each), so only hull OPPs can be part of a least-energy schedule; points exactly on a hull
        edge are kept. Exact rational arithmetic, so collinear tables (same voltage) stay collinear.
        """
        pts = sorted(((Fraction(1, o.khz), self._epc_exact(o), o) for o in (self.opps if opps is None else opps)),
                     key=lambda p: p[0])
        hull: list[tuple[Fraction, Fraction, Opp]] = []
        for p in pts:
            while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) < 0:
                hull.pop()
            hull.append(p)
        return tuple(sorted((h[2] for h in hull), key=lambda o: o.khz))

    def dominated_opps(self) -> tuple[Opp, ...]:
        """OPPs above the hull: some mix of two others runs the same cycles as fast for less energy.
        Informational: real tables have them (e.g. low OPPs at the voltage floor once leakage counts)."""
        on = set(self.hull_opps())
        return tuple(o for o in self.opps if o not in on)

    def critical_opp(self, opps: Iterable[Opp] | None = None) -> Opp:
        """The hull OPP with the least energy per cycle (the critical speed); ties go to the slower."""
        hull = self.hull_opps(opps)
        return min(hull, key=lambda o: (self._epc_exact(o), o.khz))

    def _epc_exact(self, o: Opp) -> Fraction:
        c, leak = Fraction(self.dynamic_power_coefficient), Fraction(self.leakage_ua)
        v = Fraction(o.microvolt, 1_000_000)
        return (c * Fraction(o.khz, 1000) * v * v + leak * v) / o.khz

    # --- consistency ---------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Problems, in words; empty when the model is physically consistent."""
        problems: list[str] = []
        if not self.opps:
            problems.append("no OPPs")
        if not self.states:
            problems.append("no idle states")
        for name, v in (("dynamic_power_coefficient", self.dynamic_power_coefficient), ("leakage_ua", self.leakage_ua)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                problems.append(f"{name} {v!r} is not a finite number >= 0")
        khz = [o.khz for o in self.opps]
        if khz != sorted(set(khz)):
            problems.append(f"OPP frequencies {khz} are not strictly ascending")
        for o in self.opps:
            if o.khz <= 0 or o.microvolt <= 0:
                problems.append(f"OPP {o.khz} kHz / {o.microvolt} uV: both must be > 0")
        for a, b in zip(self.opps, self.opps[1:], strict=False):
            if b.microvolt < a.microvolt:
                problems.append(f"voltage falls from {a.microvolt} uV at {a.khz} kHz to {b.microvolt} uV "
                                f"at {b.khz} kHz")
        names = [s.name for s in self.states]
        if len(set(names)) != len(names):
            problems.append(f"idle state names {names} are not unique")
        for i, s in enumerate(self.states):
            if not STATE_NAME.match(s.name):
                problems.append(f"idle state name {s.name!r} does not match {STATE_NAME.pattern}")
            if isinstance(s.power_mw, str):
                if s.power_mw not in ("active", "clock-gated"):
                    problems.append(f"{s.name}: power {s.power_mw!r} is not a number, 'active' or 'clock-gated'")
                elif s.power_mw == "active" and i != 0:
                    problems.append(f"{s.name}: only the first (polling) state can draw the active power")
            elif not (math.isfinite(s.power_mw) and s.power_mw >= 0):
                problems.append(f"{s.name}: power {s.power_mw} mW is not a finite number >= 0")
        lat = [s.exit_latency_us for s in self.states]
        if lat != sorted(lat):
            problems.append(f"exit latencies {lat} are not ascending (shallowest state first)")
        if problems or not self.opps:
            return problems
        low = self.opps[0]
        for s in self.states:
            if s.power_mw != "active" and self.idle_uw(s, low) >= self.active_uw(low):
                problems.append(f"{s.name} draws {self.idle_uw(s, low) / 1000:.1f} mW idle, not below the active "
                                f"{self.active_uw(low) / 1000:.1f} mW at the lowest OPP ({low.khz} kHz)")
        for o in self.opps:
            for a, b in zip(self.states, self.states[1:], strict=False):
                if self.idle_uw(b, o) > self.idle_uw(a, o):
                    problems.append(f"{b.name} draws more than the shallower {a.name} at {o.khz} kHz "
                                    f"({self.idle_uw(b, o) / 1000:.1f} > {self.idle_uw(a, o) / 1000:.1f} mW)")
        return problems


def _cross(o, a, b) -> Fraction:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
