"""Platform knobs -> guest commands, and guest sysfs snapshots -> energy and residency.

The snapshots in tests/golden are real: written by the guest script of an x86_64 smoke run on
the simulated platform (schedutil + menu, default tables)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.guest import platform
from harness.spec.model import PlatformSpec

GOLDEN = Path(__file__).parent / "golden"


def test_plan_puts_tables_on_the_cmdline_and_every_knob_in_the_script():
    spec = PlatformSpec(governor="userspace", userspace_khz=1_600_000, max_cstate=2, disabled_cstates=["C1"],
                        pm_qos_latency_us=0, idle_governor="teo")
    p = platform.plan(spec, "x86_64")
    assert "sim_cpufreq.opps=800000:150,1600000:450,2400000:1000,3200000:1800" in p.cmdline
    assert "cpuidle_sim.states=POLL:0:0:600,C1:2:2:300,C3:60:200:100,C6:250:1000:20" in p.cmdline
    assert any(line.startswith("setall governor ") and line.endswith(" userspace") for line in p.setup)
    assert any("scaling_setspeed' 1600000" in line for line in p.setup)
    assert any("current_governor' teo" in line for line in p.setup)
    # max_cstate 2 turns off C6; C1 is named; the rest are written back on
    assert [line for line in p.setup if line.startswith("cstate ")] == \
        ["cstate POLL 0", "cstate C1 1", "cstate C3 0", "cstate C6 1"]
    assert p.applied["disabled_cstates"] == ["C1", "C6"]
    assert "checkqos 0" in p.setup


def test_arm64_has_no_poll_state():
    p = platform.plan(PlatformSpec(max_cstate=1), "arm64")
    assert p.expected_cstates == ["C1", "C3", "C6"]
    assert "cstate C3 1" in p.setup and "cstate C1 0" in p.setup


@pytest.mark.parametrize("knobs, words", [
    ({"governor": "performance", "rate_limit_us": 100}, "schedutil tunable"),
    ({"governor": "userspace", "userspace_khz": 1_000_000}, "not one of the OPPs"),
    ({"disabled_cstates": ["C9"]}, "not among the simulated states"),
    ({"max_cstate": 4}, "past the last"),
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
    assert platform.verify(PlatformSpec(), "x86_64", snap) == []
    wrong = platform.verify(PlatformSpec(governor="performance", idle_governor="teo", pm_qos_latency_us=0),
                            "x86_64", snap)
    assert any("policy0 governor is schedutil, not performance" in w for w in wrong)
    assert any("idle governor is menu, not teo" in w for w in wrong)
    assert any("PM QoS" in w for w in wrong)
    other = PlatformSpec(sim={"opps": [{"khz": 1_000_000, "power_mw": 1}]})
    assert any("OPPs are" in w for w in platform.verify(other, "x86_64", snap))
    assert any("idle states are" in w for w in platform.verify(PlatformSpec(), "arm64", snap))


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
