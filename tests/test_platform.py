"""Platform knobs -> guest commands, and guest sysfs snapshots -> energy and residency.

The snapshots in tests/golden are real: written by the guest script of an x86_64 smoke run on
the simulated platform (schedutil + menu, default tables)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.guest import platform
from harness.spec.model import PlatformSpec

GOLDEN = Path(__file__).parent / "golden"

# The table the golden snapshots were taken with (four OPPs; POLL, C1, C3, C6), in today's terms.
GOLDEN_SIM = {
    "opps": [{"khz": 800_000, "microvolt": 700_000}, {"khz": 1_600_000, "microvolt": 800_000},
             {"khz": 2_400_000, "microvolt": 950_000}, {"khz": 3_200_000, "microvolt": 1_100_000}],
    "dynamic_power_coefficient": 1000, "leakage_ua": 500_000, "transition_latency_us": 30, "steal_chunk_us": 25,
    "cstates": [{"name": "POLL", "exit_latency_us": 0, "target_residency_us": 0},
                {"name": "C1", "exit_latency_us": 2, "target_residency_us": 2},
                {"name": "C3", "exit_latency_us": 60, "target_residency_us": 200, "power_mw": 50.5},
                {"name": "C6", "exit_latency_us": 250, "target_residency_us": 1000, "power_mw": 0}],
}
GOLDEN_CMDLINE = [
    "sim_cpufreq.opps=800000:700000,1600000:800000,2400000:950000,3200000:1100000",
    "sim_cpufreq.dyn_coeff=1000",
    "sim_cpufreq.leakage_ua=500000",
    "sim_cpufreq.transition_latency_us=30",
    "sim_cpufreq.steal_chunk_us=25",
    "sim_cpufreq.steal_irq_ns=1050",        # the x86_64 calibration (STEAL_IRQ_NS), none given
    # active (POLL), cg (clock-gated), a number of uW; 0 mW goes as 1 uW (0 is the driver's 'active')
    "cpuidle_sim.states=POLL:0:0:active,C1:2:2:cg,C3:60:200:50500,C6:250:1000:1",
]


def test_plan_puts_tables_on_the_cmdline_and_every_knob_in_the_script():
    spec = PlatformSpec(governor="userspace", userspace_khz=1_600_000, max_cstate=2, disabled_cstates=["C1"],
                        pm_qos_latency_us=0, idle_governor="teo", sim=GOLDEN_SIM)
    p = platform.plan(spec, "x86_64")
    assert p.cmdline == GOLDEN_CMDLINE
    assert p.applied["sim"]["cstates"][1]["power_mw"] == "clock-gated"
    assert any(line.startswith("setall governor ") and line.endswith(" userspace") for line in p.setup)
    assert any("scaling_setspeed' 1600000" in line for line in p.setup)
    assert any("current_governor' teo" in line for line in p.setup)
    # max_cstate 2 turns off C6; C1 is named; the rest are written back on
    assert [line for line in p.setup if line.startswith("cstate ")] == \
        ["cstate POLL 0", "cstate C1 1", "cstate C3 0", "cstate C6 1"]
    assert p.applied["disabled_cstates"] == ["C1", "C6"]
    assert "checkqos 0" in p.setup


def test_arm64_has_no_poll_state():
    p = platform.plan(PlatformSpec(max_cstate=1, sim=GOLDEN_SIM), "arm64")
    assert p.expected_cstates == ["C1", "C3", "C6"]
    assert "cstate C3 1" in p.setup and "cstate C1 0" in p.setup
    assert not any(line.startswith("cstate POLL") for line in p.setup)
    # the driver is told about POLL anyway (it ignores it where there is no polling state)
    assert p.cmdline[-1].startswith("cpuidle_sim.states=POLL:0:0:active,")


@pytest.mark.parametrize("knobs, words", [
    ({"governor": "performance", "rate_limit_us": 100}, "schedutil tunable"),
    ({"governor": "userspace", "userspace_khz": 1_000_000}, "not one of the OPPs"),
    ({"disabled_cstates": ["C11"]}, "not among the simulated states"),
    ({"max_cstate": 9}, "past the last"),               # the default table has 9 states
    ({"max_cstate": 4, "sim": GOLDEN_SIM}, "past the last"),
    ({"only_cstate": "C11"}, "only_cstate 'C11' is not among the simulated states"),
    ({"governor": "userspace", "userspace_khz": 1_000_000, "sim": {"preset": "rk3399-a72"}},
     r"not one of the OPPs \[408000, "),
    ({"sim": {"cstates": [{"name": "C1", "exit_latency_us": 5, "target_residency_us": 5},
                          {"name": "POLL", "exit_latency_us": 6, "target_residency_us": 0}]}}, "POLL can only"),
    ({"sim": {"cstates": [{"name": "C3", "exit_latency_us": 50, "target_residency_us": 5},
                          {"name": "C1", "exit_latency_us": 2, "target_residency_us": 0}]}}, "shallowest first"),
])
def test_inconsistent_knobs_are_refused(knobs, words):
    with pytest.raises(ValidationError, match=words):
        PlatformSpec(**knobs)


def test_snapshot_delta_gives_energy_and_residency():
    before = platform.parse_snapshot((GOLDEN / "platform-before.txt").read_text())
    after = platform.parse_snapshot((GOLDEN / "platform-after.txt").read_text())
    assert before.cpufreq_driver == "sim-cpufreq" and before.cpuidle_driver == "sim-cpuidle"
    assert before.available_khz == [800000, 1600000, 2400000, 3200000]
    assert [s.name for s in before.idle[0]] == ["POLL", "C1", "C3", "C6"]
    assert before.governors == {0: "schedutil", 1: "schedutil"}
    d = platform.delta(before, after)
    assert d.elapsed_s > 0.5 and d.energy_uj > 0
    # the meter's active + idle time is the CPU time of both CPUs over the repeat
    assert d.active_us + d.idle_us == pytest.approx(2 * d.elapsed_s * 1e6, rel=0.05)
    s = platform.summarize([d], steps_per_repeat=330)
    assert sum(s.freq_residency.values()) == pytest.approx(1.0, abs=0.01)
    assert 0 < s.active_fraction < 1
    assert s.avg_power_mw == pytest.approx(d.energy_uj / d.elapsed_s / 1e3, rel=0.01)
    assert s.energy_per_step_by_repeat_uj == [pytest.approx(d.energy_uj / 330, abs=0.01)]
    # cpuidle's own residency counts the exit latency as idle, the meter counts it as active:
    # the two agree once every entry's exit latency is moved over
    lat = {st.name: st.latency_us for st in after.idle[0]}
    exits_s = sum(n * lat[name] for name, n in d.idle_entries.items()) / 1e6
    assert sum(d.idle_time_s.values()) == pytest.approx(d.idle_us / 1e6 + exits_s, rel=0.05)


def test_verify_names_every_knob_that_did_not_hold():
    snap = platform.parse_snapshot((GOLDEN / "platform-before.txt").read_text())
    assert snap.params == {}             # a kernel without the module parameters: nothing to compare
    assert platform.verify(PlatformSpec(sim=GOLDEN_SIM), "x86_64", snap) == []
    wrong = platform.verify(PlatformSpec(governor="performance", idle_governor="teo", pm_qos_latency_us=0,
                                         sim=GOLDEN_SIM), "x86_64", snap)
    assert any("policy0 governor is schedutil, not performance" in w for w in wrong)
    assert any("idle governor is menu, not teo" in w for w in wrong)
    assert any("PM QoS" in w for w in wrong)
    other = PlatformSpec(sim={**GOLDEN_SIM, "opps": [{"khz": 1_000_000, "microvolt": 800_000}]})
    assert any("OPPs are" in w for w in platform.verify(other, "x86_64", snap))
    assert any("idle states are" in w for w in platform.verify(PlatformSpec(sim=GOLDEN_SIM), "arm64", snap))
    # the default table (the x86-skl-client preset) is not what this guest ran
    assert any("OPPs are [800000, 1600000, 2400000, 3200000], not [800000, 1200000," in w
               for w in platform.verify(PlatformSpec(), "x86_64", snap))


@pytest.mark.parametrize("line,words", [
    ("/sys/devices/system/cpu/sim_power/energy_uj:lots", "energy_uj: unexpected value"),
    ("/sys/devices/system/cpu/cpu0/cpuidle/state0/name:$(rm -rf /)", "idle state named"),
    ("/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq:" + "9" * 40, "unexpected value"),
    ("uptime:nan", "uptime: unexpected value"),
])
def test_odd_snapshot_values_are_named_errors(line, words):
    text = (GOLDEN / "platform-before.txt").read_text() + line + "\n"
    with pytest.raises(platform.SnapshotError, match=words) as e:
        platform.parse_snapshot(text, "platform-r0-before.txt")
    assert "platform-r0-before.txt" in str(e.value) and len(str(e.value)) < 300


# -- the physical tables -----------------------------------------------------------------------------

def _state_power_rendered(power) -> str:
    sim = {**GOLDEN_SIM, "cstates": [GOLDEN_SIM["cstates"][1],
                                     {"name": "RET", "exit_latency_us": 50, "target_residency_us": 100,
                                      "power_mw": power}]}
    (states,) = [c for c in platform.sim_cmdline(PlatformSpec(sim=sim)) if c.startswith("cpuidle_sim.states=")]
    return states.removeprefix("cpuidle_sim.states=C1:2:2:cg,RET:50:100:")


@pytest.mark.parametrize("power, rendered", [
    ("clock-gated", "cg"), (12, "12000"), (0.0136, "14"), (0.0004, "1"), (0, "1"), (349.9994, "349999"),
])
def test_state_power_goes_to_the_driver_as_cg_or_whole_microwatts(power, rendered):
    assert _state_power_rendered(power) == rendered


def test_poll_and_only_poll_draws_active_power():
    from harness.spec.model import CState

    assert CState(name="POLL", exit_latency_us=0, target_residency_us=0).power_mw == "active"
    assert CState(name="C1", exit_latency_us=1, target_residency_us=1).power_mw == "clock-gated"
    assert CState(name="C-6", exit_latency_us=1, target_residency_us=1, power_mw=2).power_mw == 2   # '-' allowed
    for bad in ({"name": "C1", "power_mw": "active"}, {"name": "POLL", "power_mw": 5},
                {"name": "POLL", "power_mw": "clock-gated"}):
        with pytest.raises(ValidationError, match="POLL, and only POLL, draws 'active' power"):
            CState(exit_latency_us=0, target_residency_us=0, **bad)
    with pytest.raises(ValidationError, match="an idle state name"):
        CState(name="C 1", exit_latency_us=0, target_residency_us=0)


@pytest.mark.parametrize("sim, words", [
    ({"opps": [{"khz": 800_000, "microvolt": 900_000}, {"khz": 1_600_000, "microvolt": 850_000}]},
     "OPP voltages must not fall"),
    ({"opps": [{"khz": 800_000, "microvolt": 2_000_001}]}, "less than or equal to 2000000"),
    ({"dynamic_power_coefficient": 100_001}, "less than or equal to 100000"),
    ({"leakage_ua": -1}, "greater than or equal to 0"),
    ({"steal_chunk_us": 4}, "greater than or equal to 5"),
    # clock-gated C1 draws 350 mW at 800 MHz / 0.7 V (500 mA leakage): a fixed 400 mW C6 is not deeper
    ({**GOLDEN_SIM, "cstates": [GOLDEN_SIM["cstates"][1], {"name": "C6", "exit_latency_us": 250,
                                                           "target_residency_us": 1000, "power_mw": 400}]},
     r"C6 draws more than the shallower C1 at 800000 kHz \(400.0 > 350.0 mW\)"),
    ({**GOLDEN_SIM, "cstates": [{"name": "C6", "exit_latency_us": 250, "target_residency_us": 1000,
                                 "power_mw": 5000}]}, "not below the active"),
    ({"preset": "snapdragon"}, r"preset 'snapdragon' is not one of \['rk3399-a53', 'rk3399-a72', 'x86-skl-client'\]"),
])
def test_unphysical_tables_are_refused(sim, words):
    with pytest.raises(ValidationError, match=words):
        PlatformSpec(sim=sim)


# -- userspace frequency and a single idle state -------------------------------------------------------

@pytest.mark.parametrize("preset, khz", [
    ("x86-skl-client", {"min": 800_000, "mid": 2_400_000, "max": 4_000_000}),       # 9 OPPs: the 5th
    ("rk3399-a72", {"min": 408_000, "mid": 1_008_000, "max": 1_800_000}),           # 8 OPPs: the 4th
    ("rk3399-a53", {"min": 408_000, "mid": 816_000, "max": 1_416_000}),             # 6 OPPs: the 3rd
])
def test_userspace_min_mid_max_resolve_against_the_table(preset, khz):
    for word, want in khz.items():
        spec = PlatformSpec(governor="userspace", userspace_khz=word, sim={"preset": preset})
        assert spec.userspace_khz == word and spec.userspace_frequency() == want
        p = platform.plan(spec, "arm64")
        assert [line for line in p.setup if line.startswith("setall userspace_khz ")] == \
            [f"setall userspace_khz '/sys/devices/system/cpu/cpufreq/policy*/scaling_setspeed' {want}"]
        assert p.applied["userspace_khz"] == want
    plain = PlatformSpec(governor="userspace", userspace_khz=1_200_000, sim={"preset": "rk3399-a72"})
    assert plain.userspace_frequency() == 1_200_000
    assert PlatformSpec().userspace_frequency() is None
    with pytest.raises(ValidationError):
        PlatformSpec(governor="userspace", userspace_khz="fastest")


def test_verify_compares_the_resolved_userspace_frequency():
    snap = platform.parse_snapshot((GOLDEN / "platform-before.txt").read_text())   # policy0 3.2 GHz, policy1 0.8
    wrong = platform.verify(PlatformSpec(governor="userspace", userspace_khz="max", sim=GOLDEN_SIM), "x86_64", snap)
    assert "policy1 runs at 800000 kHz, not 3200000" in wrong
    assert not any(w.startswith("policy0 runs at") for w in wrong)


@pytest.mark.parametrize("only, preset, arch, left", [
    ("shallowest", "x86-skl-client", "x86_64", "C1"),         # the first state after POLL
    ("deepest", "x86-skl-client", "x86_64", "C10"),
    ("C3", "x86-skl-client", "arm64", "C3"),
    ("shallowest", "rk3399-a72", "arm64", "WFI"),             # no POLL: the first state
    ("deepest", "rk3399-a53", "x86_64", "cluster-sleep"),
])
def test_only_cstate_leaves_exactly_one_state_enabled(only, preset, arch, left):
    spec = PlatformSpec(only_cstate=only, sim={"preset": preset})
    assert spec.only_state() == left
    p = platform.plan(spec, arch)
    lines = [line for line in p.setup if line.startswith("cstate ")]
    assert lines == [f"cstate {n} {0 if n == left else 1}" for n in p.expected_cstates]
    assert p.applied["disabled_cstates"] == [n for n in p.expected_cstates if n != left]


def test_only_cstate_adds_to_the_other_idle_knobs():
    spec = PlatformSpec(only_cstate="deepest", disabled_cstates=["C1"], sim=GOLDEN_SIM)
    assert [line for line in platform.plan(spec, "x86_64").setup if line.startswith("cstate ")] == \
        ["cstate POLL 1", "cstate C1 1", "cstate C3 1", "cstate C6 0"]


# -- per-CPU meters and driver parameters in the snapshots ------------------------------------------------

def _meters(energy, active, idle, cycles, cpus=(0, 1)):
    """sim_power's per-CPU files as the guest's snapshot helper writes them (grep -H)."""
    return "".join(f"/sys/devices/system/cpu/sim_power/cpu{c}/{k}:{v[c]}\n" for c in cpus
                   for k, v in (("energy_uj", energy), ("active_us", active), ("idle_us", idle), ("cycles", cycles)))


def _params(spec):
    lines = []
    for item in platform.sim_cmdline(spec):
        key, value = item.split("=", 1)
        module, param = key.split(".")
        lines.append(f"/sys/module/{module}/parameters/{param}:{value}\n")
    return "".join(lines)


def test_snapshot_reads_per_cpu_meters_and_driver_parameters():
    spec = PlatformSpec(sim=GOLDEN_SIM)
    text = ((GOLDEN / "platform-before.txt").read_text() + "/sys/devices/system/cpu/sim_power/cycles:123456789\n"
            + _meters([10, 20], [30, 40], [50, 60], [70, 80]) + _params(spec))
    s = platform.parse_snapshot(text)
    assert s.cycles == 123456789 and s.energy_uj == 6625138           # the totals stay where they were
    assert s.per_cpu == {0: {"energy_uj": 10, "active_us": 30, "idle_us": 50, "cycles": 70},
                         1: {"energy_uj": 20, "active_us": 40, "idle_us": 60, "cycles": 80}}
    assert s.params == {
        "sim_cpufreq.opps": "800000:700000,1600000:800000,2400000:950000,3200000:1100000",
        "sim_cpufreq.dyn_coeff": "1000", "sim_cpufreq.leakage_ua": "500000",
        "sim_cpufreq.transition_latency_us": "30", "sim_cpufreq.steal_chunk_us": "25",
        "sim_cpufreq.steal_irq_ns": "1050",
        "cpuidle_sim.states": "POLL:0:0:active,C1:2:2:cg,C3:60:200:50500,C6:250:1000:1"}
    assert platform.verify(spec, "x86_64", s) == []


@pytest.mark.parametrize("line, words", [
    ("/sys/devices/system/cpu/sim_power/cpu1/energy_uj:lots", "cpu1/energy_uj: unexpected value"),
    ("/sys/devices/system/cpu/sim_power/cpu0/cycles:-", "cpu0/cycles: unexpected value"),
    ("/sys/devices/system/cpu/sim_power/cpu0/idle_us:" + "9" * 40, "cpu0/idle_us: unexpected value"),
])
def test_odd_per_cpu_meter_values_are_named_errors(line, words):
    text = (GOLDEN / "platform-before.txt").read_text() + line + "\n"
    with pytest.raises(platform.SnapshotError, match=words) as e:
        platform.parse_snapshot(text, "platform-r0-after.txt")
    assert str(e.value).startswith("platform-r0-after.txt:") and len(str(e.value)) < 300


def test_a_hostile_parameter_value_is_excerpted():
    text = "/sys/module/cpuidle_sim/parameters/states:\x1b[31m" + "x" * 1000 + "\n"
    v = platform.parse_snapshot(text).params["cpuidle_sim.states"]
    assert len(v) <= 300 and v.isprintable() and v.isascii() and "\x1b" not in v


def test_verify_names_a_driver_parameter_that_differs_from_the_cmdline():
    spec = PlatformSpec(sim=GOLDEN_SIM)
    base = (GOLDEN / "platform-before.txt").read_text()
    clamped = _params(spec).replace("steal_chunk_us:25", "steal_chunk_us:100")
    wrong = platform.verify(spec, "x86_64", platform.parse_snapshot(base + clamped))
    assert wrong == ["sim_cpufreq.steal_chunk_us is '100', not '25'"]
    # a kernel that has the other parameters but not this one (an older driver): named as absent
    missing = "".join(line + "\n" for line in _params(spec).splitlines() if "/leakage_ua:" not in line)
    assert platform.verify(spec, "x86_64", platform.parse_snapshot(base + missing)) == \
        ["sim_cpufreq.leakage_ua is 'absent', not '500000'"]
    # the states table the driver holds is the whole cmdline string
    other_states = _params(spec).replace("C6:250:1000:1", "C6:250:1000:20000")
    (w,) = platform.verify(spec, "x86_64", platform.parse_snapshot(base + other_states))
    assert w.startswith("cpuidle_sim.states is 'POLL:0:0:active,") and "C6:250:1000:20000" in w


# -- the agent CPU's figures per step ----------------------------------------------------------------------

def _snap(uptime, total, per_cpu, cpus=(0, 1)):
    energy, active, idle, cycles = (list(x) for x in zip(*per_cpu, strict=True))
    text = (f"uptime:{uptime}\n/sys/devices/system/cpu/sim_power/energy_uj:{total}\n"
            f"/sys/devices/system/cpu/sim_power/active_us:{sum(active)}\n"
            f"/sys/devices/system/cpu/sim_power/idle_us:{sum(idle)}\n")
    return platform.parse_snapshot(text + _meters(energy, active, idle, cycles, cpus))


def test_summarize_gives_the_agent_cpus_figures_per_step():
    # per CPU: (energy_uj, active_us, idle_us, cycles)
    r0 = (_snap(10.0, 1000, [(400, 5000, 5000, 10**7), (600, 6000, 4000, 2 * 10**7)]),
          _snap(10.5, 2500, [(700, 5200, 5300, 11 * 10**6), (1800, 6300, 4200, 24 * 10**6)]))
    r1 = (_snap(20.0, 9000, [(4000, 9000, 9000, 5 * 10**7), (5000, 9000, 9000, 6 * 10**7)]),
          _snap(20.4, 10000, [(4100, 9100, 9300, 51 * 10**6), (5900, 9300, 9100, 63 * 10**6)]))
    deltas = [platform.delta(b, a) for b, a in (r0, r1)]
    assert deltas[0].per_cpu[1] == {"energy_uj": 1200, "active_us": 300, "idle_us": 200, "cycles": 4 * 10**6}
    s = platform.summarize(deltas, steps_per_repeat=100, agent_cpu=1)
    assert s.agent_cpu == 1
    assert s.agent_energy_per_step_by_repeat_uj == [12.0, 9.0]
    assert s.agent_active_per_step_by_repeat_us == [3.0, 3.0]
    assert s.agent_idle_per_step_by_repeat_us == [2.0, 1.0]
    assert s.agent_cycles_per_step_by_repeat == [40_000.0, 30_000.0]
    assert s.period_per_step_by_repeat_us == [pytest.approx(5000), pytest.approx(4000)]
    assert s.energy_per_step_by_repeat_uj == [15.0, 10.0]              # all CPUs, as before
    other = platform.summarize(deltas, steps_per_repeat=100, agent_cpu=0)
    assert other.agent_energy_per_step_by_repeat_uj == [3.0, 1.0]
    # no agent CPU, or one the meter does not show in every repeat: no agent figures at all
    for s in (platform.summarize(deltas, 100), platform.summarize(deltas, 100, agent_cpu=5),
              platform.summarize([deltas[0], platform.delta(_snap(1, 0, [(0, 0, 0, 0)], cpus=(0,)),
                                                             _snap(2, 5, [(5, 1, 1, 9)], cpus=(0,)))],
                                 100, agent_cpu=1)):
        assert s.agent_cpu is None and s.agent_energy_per_step_by_repeat_uj == [] == s.agent_cycles_per_step_by_repeat
    assert platform.summarize(deltas, 0, agent_cpu=1).agent_cpu is None


def _scx_snap(state="enabled", ops="simple", seq=1):
    return platform.parse_snapshot(f"uptime:1.0\n/sys/kernel/sched_ext/state:{state}\n"
                                   f"/sys/kernel/sched_ext/root/ops:{ops}\n/sys/kernel/sched_ext/enable_seq:{seq}\n")


def test_sched_ext_starts_last_and_must_hold_through_every_repeat():
    spec = PlatformSpec(sched_ext="scx_simple")
    plan = platform.plan(spec, "x86_64")
    assert plan.setup[-1] == "startscx scx_simple" and plan.applied["sched_ext"] == "scx_simple"
    assert "startscx" not in "\n".join(platform.plan(PlatformSpec(), "x86_64").setup)
    ok = _scx_snap()
    assert platform.sched_ext_held(spec, [(ok, ok), (ok, ok)]) == []
    # the kernel fell back to the fair class in repeat 1 (the loader died, or the watchdog fired)
    fell_back = platform.sched_ext_held(spec, [(ok, ok), (ok, _scx_snap("disabled"))])
    assert "after repeat 1: state 'disabled'" in fell_back[0]
    # enabled again in between: another scheduler, or the same one restarted, ran part of the loop
    assert "enable_seq 2 (first 1)" in platform.sched_ext_held(spec, [(ok, _scx_snap(seq=2))])[0]
    assert "ops 'qmap'" in platform.sched_ext_held(spec, [(_scx_snap(ops="qmap"), ok)])[0]
    assert "state 'absent'" in platform.sched_ext_held(spec, [(platform.parse_snapshot("uptime:1\n"), ok)])[0]
    assert platform.sched_ext_held(PlatformSpec(), [(platform.parse_snapshot("uptime:1\n"),) * 2]) == []
