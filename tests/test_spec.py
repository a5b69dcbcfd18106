"""Experiment files: the example loads into the expected matrix; every kind of bad input gives
one located error per problem, exit code 2, and builds nothing."""

import re
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.spec import load_experiment

EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "dvfs_ramp.yaml"


def test_example_expands_to_both_arches_and_both_agent_settings():
    le = load_experiment(EXAMPLE)
    pairs = {(c.spec.arch, c.spec.kernel.agent_latency) for c in le.cells}
    assert pairs == {("x86_64", False), ("x86_64", True), ("arm64", False), ("arm64", True)}
    # every variant on both arches, for each platform preset of the matrix
    presets = {(c.spec.arch, c.variant, c.spec.platform.sim.preset) for c in le.cells}
    assert len(presets) == len(le.cells) == 2 * 6 * 2
    assert {p for _, _, p in presets} == {"x86-skl-client", "rk3399-a72"}
    floor = next(c for c in le.cells if c.id == "arm64-floor-preset_rk3399-a72")
    assert floor.spec.platform.governor == "performance" and floor.spec.platform.idle_poll
    assert [o.khz for o in floor.spec.platform.sim.opps][-1] == 1_800_000
    agent = next(c for c in le.cells if c.id == "x86_64-agent-preset_x86-skl-client")
    assert agent.spec.workload.mark_agent and agent.spec.kernel.variant == "agent-on"
    assert [o.khz for o in agent.spec.platform.sim.opps][-1] == 4_000_000


def test_matrix_axes_cross_variants(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(textwrap.dedent("""\
        name: m
        arch: [x86_64, arm64]
        matrix:
          platform.governor: [schedutil, performance]
          workload.wait.us: [100, 1000, 10000]
        variants:
          - {name: a, set: {kernel.agent_latency: true}}
          - {name: b}
    """))
    cells = load_experiment(f).cells
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({c.id for c in cells}) == len(cells)
    c = next(c for c in cells if c.id == "arm64-a-governor_performance-us_10000")
    assert c.spec.kernel.agent_latency and c.spec.workload.wait.us == 10000


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


BAD = {
    "unknown_key": ("name: x\nplatform:\n  governer: schedutil\n",
                    r":3:3: platform\.governer: unknown key"),
    "wrong_type": ("name: x\nmachine:\n  cpus: two\n",
                   r":3:3: machine\.cpus: Input should be a valid integer"),
    "bad_arch": ("name: x\narch: [x86_64, riscv]\n",
                 r":2:16: arch\[1\]: Input should be 'x86_64' or 'arm64' \(got 'riscv'\)"),
    "yaml_syntax": ("name: x\nworkload:\n  steps: [1, 2\n  warmup: 3\n",
                    r":4:\d+: workload\.steps: YAML syntax error"),
    "duplicate_key": ("name: x\nrepeats: 2\nrepeats: 3\n",
                      r":3:1: repeats: duplicate key \(first defined at line 2\)"),
    "missing_name": ("arch: [x86_64]\n", r":1:1: name: required field is missing"),
    "bad_variant_value": ("name: x\nvariants:\n  - name: v\n    set:\n      platform.governor: turbo\n",
                          r":5:7: platform\.governor: Input should be 'schedutil'"),
    "bad_matrix_path": ("name: x\nmatrix:\n  platfrm.governor: [performance]\n",
                        r":3:3: matrix\.platfrm\.governor: 'platfrm' is not a cell field"),
    "missing_fragment": ("name: x\nkernel:\n  fragments: [base, sim-platform, nope]\n",
                         r":3:35: kernel\.fragments\[2\]: no config fragment kernel/configs/nope\.config"),
    "variant_missing_fragment": ("name: x\nvariants:\n  - name: v\n    set:\n"
                                 "      kernel.fragments: [base, sim-platform, nope]\n",
                                 r":5:46: kernel\.fragments\[2\]: no config fragment kernel/configs/nope\.config"),
    "inject_without_world": ("name: x\nworkload:\n  inject_delay_us: 5\n  wait: {kind: nanosleep}\n",
                             r":3:3: workload\.inject_delay_us: inject_delay_us needs a world thread; "
                             r"wait kind 'nanosleep'"),
    "semantic": ("name: x\nplatform:\n  governor: userspace\n",
                 r":3:3: platform\.governor: governor 'userspace' needs userspace_khz"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "plan", "build"])
def test_bad_experiment_is_one_located_error_and_exit_2(case, command, tmp_path, capsys, empty_cache):
    text, pattern = BAD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    code, err = run_cli(capsys, command, str(f))
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {f}:"), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not empty_cache.exists() or not any((empty_cache / d).exists() for d in ("sources", "trees", "builds"))


def test_missing_file(capsys, tmp_path):
    code, err = run_cli(capsys, "plan", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in err and "no such file" in err


def test_each_problem_reported_once_even_across_cells(tmp_path, capsys):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\narch: [x86_64, arm64]\nmatrix:\n  workload.steps: [10, -1]\n"
                 "  platform.idle_governor: [menu, fast]\n")
    code, err = run_cli(capsys, "validate", str(f))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert ":4:24: workload.steps: Input should be greater than or equal to 1 (got -1)" in lines[0]
    assert ":5:34: platform.idle_governor:" in lines[1]


def test_validate_ok(capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "24 cells" in capsys.readouterr().out


SHIPPED = sorted([*EXAMPLE.parent.glob("*.yaml"),   # and the test box's, beside its stand-in inventory
                  *(p for p in (EXAMPLE.parent / "testbox").glob("*.yaml") if p.name != "targets.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_experiment_loads(path):
    assert load_experiment(path).cells


def test_variant_section_mapping_merges_into_the_section(tmp_path):
    """`set: {kernel: {...}}` changes the keys it names and keeps the rest of the section."""
    f = tmp_path / "merge.yaml"
    f.write_text(textwrap.dedent("""\
        name: merge
        kernel: {series: [sim-platform, agent-latency], fragments: [base, tracing, platform, sim-platform],
                 debug: true, config: {CONFIG_HZ: 1000}}
        platform:
          governor: userspace
          userspace_khz: 1600000
          sim: {steal_chunk_us: 100, transition_latency_us: 300}
        workload: {steps: 10, warmup: 1, wait: {kind: eventfd, us: 500}}
        variants:
          - name: agent
            set:
              kernel: {agent_latency: true, config: {CONFIG_LOCALVERSION: '"-agent"'}}
              platform: {sim: {steal_chunk_us: 250}}
              workload.wait: {us: 900}
        matrix:
          workload: [{steps: 20}, {steps: 30}]
    """))
    cells = load_experiment(f).cells
    assert [c.id for c in cells] == ["x86_64-agent-workload___steps___20_", "x86_64-agent-workload___steps___30_"]
    k, p, w = cells[0].spec.kernel, cells[0].spec.platform, cells[0].spec.workload
    assert k.agent_latency and k.debug and k.series == ["sim-platform", "agent-latency"]
    assert k.config == {"CONFIG_HZ": "1000", "CONFIG_LOCALVERSION": '"-agent"'}
    assert p.governor == "userspace" and p.userspace_khz == 1_600_000
    assert p.sim.steal_chunk_us == 250 and p.sim.transition_latency_us == 300
    assert p.sim.preset == "x86-skl-client" and len(p.sim.opps) == 9      # the rest from the default preset
    assert w.wait.us == 900 and w.wait.kind == "eventfd" and w.warmup == 1
    assert [c.spec.workload.steps for c in cells] == [20, 30]


def test_yaml_1_1_surprises_stay_strings(tmp_path):
    """Dates and non-decimal numbers are what was written: a hex config value is not turned into
    decimal (which Kconfig would read back as hex), a date-like description is text."""
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ndescription: 2024-01-01\n"
                 "kernel: {config: {CONFIG_PHYSICAL_START: 0x1000000, CONFIG_HZ: 250, CONFIG_DEBUG_FS: true}}\n")
    exp = load_experiment(f).experiment
    assert exp.description == "2024-01-01"
    assert exp.kernel.config == {"CONFIG_PHYSICAL_START": "0x1000000", "CONFIG_HZ": "250", "CONFIG_DEBUG_FS": "y"}


def test_bom_crlf_and_anchors_are_fine(tmp_path):
    f = tmp_path / "w.yaml"
    text = "name: w\nworkload: &w {steps: 10, warmup: 1}\nvariants:\n  - {name: a, set: {workload: *w}}\n"
    f.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    (cell,) = load_experiment(f).cells
    assert cell.spec.workload.steps == 10


def test_all_tags_and_non_plain_scalars_refused_before_construction(tmp_path, capsys):
    """A python/object tag is reported, never constructed."""
    marker = tmp_path / "pwned"
    f = tmp_path / "t.yaml"
    f.write_text(f'name: t\nmachine: !!python/object/apply:os.system ["touch {marker}"]\n')
    code, err = run_cli(capsys, "validate", str(f))
    assert code == 2 and ":2:10: machine: YAML tags are not allowed" in err
    assert not marker.exists()


# -- the simulated platform's presets -----------------------------------------------------------------------

NOT_FROM_PRESET = {"preset", "steal_chunk_us", "steal_irq_ns"}   # the model's own defaults


def _sim(**fields):
    from harness.spec.model import SimPlatform

    return SimPlatform.model_validate(fields)


def test_no_preset_means_the_default_preset_and_it_is_recorded(tmp_path):
    from harness.platform import presets
    from harness.spec.model import DEFAULT_PRESET, PlatformSpec

    table = presets.load("x86-skl-client")
    assert DEFAULT_PRESET == "x86-skl-client"
    for sim in (_sim(), PlatformSpec().sim, _sim(preset=None)):
        assert sim.preset == "x86-skl-client"
        assert sim.model_dump(mode="json", exclude=NOT_FROM_PRESET) == table
        assert sim.transition_latency_us == 20 and sim.steal_chunk_us == 50   # the preset's, the field's default
    # one field given: the rest from the default preset, which is named
    partial = _sim(leakage_ua=2_000_000)
    assert partial.preset == "x86-skl-client" and partial.leakage_ua == 2_000_000
    assert partial.dynamic_power_coefficient == table["dynamic_power_coefficient"]
    # every field given: nothing came from a preset, none is named
    full = _sim(**table)
    assert full.preset is None and full.model_dump(mode="json", exclude=NOT_FROM_PRESET) == table
    # and the cell's recorded spec says where its table came from
    f = tmp_path / "d.yaml"
    f.write_text("name: d\n")
    (cell,) = load_experiment(f).cells
    assert cell.spec.model_dump(mode="json")["platform"]["sim"]["preset"] == "x86-skl-client"


def test_a_preset_fills_what_is_not_given_and_fields_next_to_it_override_it():
    from harness.platform import presets

    a72 = presets.load("rk3399-a72")
    sim = _sim(preset="rk3399-a72")
    assert sim.preset == "rk3399-a72" and sim.model_dump(mode="json", exclude=NOT_FROM_PRESET) == a72
    over = _sim(preset="rk3399-a72", transition_latency_us=300, steal_chunk_us=20)
    assert (over.transition_latency_us, over.steal_chunk_us) == (300, 20)
    assert over.opps == sim.opps and over.cstates == sim.cstates and over.leakage_ua == 170_000
    # a list is replaced whole, not merged item by item
    one = _sim(preset="rk3399-a53", cstates=[{"name": "WFI", "exit_latency_us": 1, "target_residency_us": 1}])
    assert [c.name for c in one.cstates] == ["WFI"] and one.dynamic_power_coefficient == 100
    # the override is validated against the preset's other fields: a53's clock-gated WFI draws 23.1 mW
    # at its lowest OPP (28 mA x 0.825 V), so a 30 mW deeper state is refused
    with pytest.raises(ValueError, match="deep draws more than the shallower WFI at 408000 kHz"):
        _sim(preset="rk3399-a53", cstates=[{"name": "WFI", "exit_latency_us": 1, "target_residency_us": 1},
                                           {"name": "deep", "exit_latency_us": 9, "target_residency_us": 9,
                                            "power_mw": 30}])
    # a recorded spec reads back as the same platform (what tests and reports do with result.json)
    for s in (sim, over, one, _sim()):
        assert type(s).model_validate(s.model_dump(mode="json")) == s


def test_preset_in_the_matrix_with_a_variant_override(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent("""\
        name: p
        matrix:
          platform.sim.preset: [rk3399-a72, x86-skl-client]
        variants:
          - {name: slow, set: {platform.sim.transition_latency_us: 300}}
          - {name: plain}
    """))
    got = {c.id: (c.spec.platform.sim.preset, c.spec.platform.sim.transition_latency_us,
                  c.spec.platform.sim.opps[-1].khz) for c in load_experiment(f).cells}
    assert got == {"x86_64-slow-preset_rk3399-a72": ("rk3399-a72", 300, 1_800_000),
                   "x86_64-slow-preset_x86-skl-client": ("x86-skl-client", 300, 4_000_000),
                   "x86_64-plain-preset_rk3399-a72": ("rk3399-a72", 40, 1_800_000),
                   "x86_64-plain-preset_x86-skl-client": ("x86-skl-client", 20, 4_000_000)}


def test_an_unknown_preset_in_the_matrix_is_one_located_error(tmp_path, capsys):
    f = tmp_path / "u.yaml"
    f.write_text("name: u\nmatrix:\n  platform.sim.preset: [rk3399-a72, nope]\n"
                 "variants:\n  - {name: a}\n  - {name: b}\n")
    code, err = run_cli(capsys, "validate", str(f))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {f}:3:37: platform.sim.preset: preset 'nope' is not one of "
                                        "['rk3399-a53', 'rk3399-a72', 'x86-skl-client']"]
