"""Platform presets: the committed YAML is what the kernel source says (plus stated assumptions), and
the device-tree and intel_idle readers behind it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import InputError
from harness.kernel.source import DEBIAN_TARBALL
from harness.platform import dts, presets
from harness.platform.energy import STATE_NAME, PowerModel

KTREE = Path(os.environ.get("HARNESS_KTREE", "/work/ktree"))
NAMES = ["rk3399-a53", "rk3399-a72", "x86-skl-client"]
needs_tree = pytest.mark.skipif(not (KTREE / "Makefile").is_file(),
                                reason=f"no extracted kernel tree at {KTREE} (set HARNESS_KTREE)")


@pytest.fixture(scope="module")
def tree_text():
    """The kernel tree's files, read by path (independently of the preset code's readers)."""
    return lambda rel: (KTREE / rel).read_text()


def test_the_presets_are_there():
    assert presets.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_preset_is_spec_ready_and_consistent(name):
    sim = presets.load(name)
    assert list(sim) == list(presets.SPEC_KEYS)
    m = PowerModel.from_sim(sim)
    assert m.validate() == []
    khz = [o["khz"] for o in sim["opps"]]
    assert khz == sorted(set(khz)) and 1 <= len(khz) <= 16
    assert all(STATE_NAME.match(c["name"]) for c in sim["cstates"])
    assert len(sim["cstates"]) <= 10
    meta = presets.describe(name)
    assert meta["source"]["kernel"] == "6.12.117"
    assert meta["source"]["file"] and meta["source"]["nodes"]
    # every assumption names a field of the preset and carries its value
    for a in meta["assumptions"]:
        assert a["why"]
        m_ = re.fullmatch(r"cstates\[(.+)\]\.power_mw", a["field"])
        if m_:
            (state,) = [c for c in sim["cstates"] if c["name"] == m_[1]]
            assert state["power_mw"] == a["value"]
        elif a["field"] == "opps":
            assert [[o["khz"], o["microvolt"]] for o in sim["opps"]] == a["value"]
        else:
            assert sim[a["field"]] == a["value"]
    assumed = {a["field"] for a in meta["assumptions"]}
    assert "leakage_ua" in assumed
    assert {f"cstates[{c['name']}].power_mw" for c in sim["cstates"][1:] if not isinstance(c["power_mw"], str)} \
        <= assumed


@pytest.mark.parametrize("name", NAMES)
def test_kernel_integer_power_within_half_a_percent(name):
    m = presets.model(name)
    for o in m.opps:
        assert m.kernel_active_uw(o) == pytest.approx(m.active_uw(o), rel=0.005)
        assert m.kernel_static_uw(o) == pytest.approx(m.static_uw(o), rel=0.005)
        assert m.kernel_dynamic_uw(o) == pytest.approx(m.dynamic_uw(o), rel=0.005)


@pytest.mark.parametrize("name", ["rk3399-a53", "rk3399-a72"])
def test_arm64_presets_start_with_wfi_and_have_no_poll(name):
    states = presets.load(name)["cstates"]
    assert states[0] == {"name": "WFI", "exit_latency_us": 1, "target_residency_us": 1, "power_mw": "clock-gated"}
    assert all(s["name"] != "POLL" and s["power_mw"] != "active" for s in states)
    assert all(isinstance(s["power_mw"], float) for s in states[1:])


def test_x86_preset_states():
    states = presets.load("x86-skl-client")["cstates"]
    assert [s["name"] for s in states] == ["POLL", "C1", "C1E", "C3", "C6", "C7s", "C8", "C9", "C10"]
    assert states[0]["power_mw"] == "active" and states[0]["exit_latency_us"] == 0
    assert states[1]["power_mw"] == "clock-gated"
    assert all(isinstance(s["power_mw"], float) for s in states[2:])


def test_preset_fits_the_spec_when_the_spec_has_the_fields():
    from harness.spec.model import SimPlatform

    if "leakage_ua" not in SimPlatform.model_fields:
        pytest.skip("harness/spec/model.py SimPlatform has no leakage_ua yet")
    for name in NAMES:
        SimPlatform.model_validate(presets.load(name))


def test_unknown_preset_is_an_input_error():
    with pytest.raises(InputError, match="no platform preset 'nope'"):
        presets.load("nope")
    with pytest.raises(InputError):
        presets.load("../presets/rk3399-a72")


# --- against the kernel source ------------------------------------------------------------------

def committed() -> dict[str, dict]:
    return {n: yaml.safe_load((presets.PRESETS_DIR / f"{n}.yaml").read_text()) for n in presets.names()}


def _any_stable_release(preset: dict) -> dict:
    """The preset with its source's stable release (6.12.N) cut to 6.12: Debian's point releases
    move N, and the tables the presets come from did not change between the ones seen."""
    out = dict(preset, source=dict(preset["source"]))
    out["source"]["kernel"] = ".".join(str(out["source"]["kernel"]).split(".")[:2])
    return out


@needs_tree
def test_committed_yaml_is_what_the_tree_gives():
    tree, ours = presets.extract(KTREE), committed()
    assert {n: _any_stable_release(p) for n, p in tree.items()} == {n: _any_stable_release(p) for n, p in ours.items()}
    assert all(str(p["source"]["kernel"]).startswith("6.12.") for p in tree.values())


@pytest.mark.extended
@pytest.mark.skipif(not DEBIAN_TARBALL.is_file(), reason=f"no {DEBIAN_TARBALL} (apt-get install linux-source-6.12)")
def test_committed_yaml_is_what_the_tarball_gives(tmp_path):
    written = presets.write_presets(DEBIAN_TARBALL, tmp_path)
    assert {p.name for p in written} == {f"{n}.yaml" for n in NAMES}
    for p in written:
        got, want = (yaml.safe_load(f.read_text()) for f in (p, presets.PRESETS_DIR / p.name))
        assert _any_stable_release(got) == _any_stable_release(want)


def _dt_block(text: str, label: str) -> str:
    """The text of the node labelled `label` up to its closing brace at the same depth (a plain scan)."""
    start = re.search(rf"^\s*{label}:\s*[\w@,.-]+\s*{{", text, re.M).end()
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start:i]


@needs_tree
def test_rk3399_numbers_match_a_grep_of_the_source(tree_text):
    base = tree_text("arch/arm64/boot/dts/rockchip/rk3399-base.dtsi")
    top = tree_text("arch/arm64/boot/dts/rockchip/rk3399.dtsi")
    for name, cpu, table, coeff in (("rk3399-a72", "cpu_b0", "cluster1_opp", 436),
                                    ("rk3399-a53", "cpu_l0", "cluster0_opp", 100)):
        sim = presets.load(name)
        assert f"dynamic-power-coefficient = <{coeff}>;" in _dt_block(base, cpu)
        assert sim["dynamic_power_coefficient"] == coeff
        opps = re.findall(r"opp-hz = /bits/ 64 <(\d+)>;\s*opp-microvolt = <(\d+)", _dt_block(top, table))
        assert [{"khz": int(hz) // 1000, "microvolt": int(uv)} for hz, uv in opps] == sim["opps"]
        assert re.search(rf"&{cpu} {{\s*operating-points-v2 = <&{table}>;", top)
        assert "clock-latency-ns = <40000>;" in _dt_block(top, table) and sim["transition_latency_us"] == 40
        for label, state in (("CPU_SLEEP", "cpu-sleep"), ("CLUSTER_SLEEP", "cluster-sleep")):
            block = _dt_block(base, label)
            entry, exit_, res = (int(re.search(rf"{p} = <(\d+)>", block)[1])
                                 for p in ("entry-latency-us", "exit-latency-us", "min-residency-us"))
            (st,) = [c for c in sim["cstates"] if c["name"] == state]
            assert (st["exit_latency_us"], st["target_residency_us"]) == (entry + exit_, res)
    assert presets.load("rk3399-a72")["opps"][-1] == {"khz": 1_800_000, "microvolt": 1_200_000}


@needs_tree
def test_skl_numbers_match_a_grep_of_the_source(tree_text):
    text = tree_text("drivers/idle/intel_idle.c")
    table = text[text.index("static struct cpuidle_state skl_cstates[]"):]
    table = table[:table.index("};")]
    grep = re.findall(r'\.name = "(\w+)",.*?\.exit_latency = (\d+),\s*\.target_residency = (\d+),', table, re.S)
    sim = presets.load("x86-skl-client")
    assert [(c["name"], c["exit_latency_us"], c["target_residency_us"]) for c in sim["cstates"][1:]] == \
        [(n, int(e), int(r)) for n, e, r in grep]
    assert ("C10", "890", "5000") in grep
    assert "#define INTEL_CPUFREQ_TRANSITION_LATENCY\t20000" in tree_text("drivers/cpufreq/intel_pstate.c")
    assert sim["transition_latency_us"] == 20
    assert 'snprintf(state->name, CPUIDLE_NAME_LEN, "POLL");' in tree_text("drivers/cpuidle/poll_state.c")


@needs_tree
def test_cli_lists_and_regenerates(tmp_path, capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "408-1800 MHz" in out and "rk3399.dtsi" in out and "C10 (890)" in out
    assert main(["presets", "--extract", str(KTREE), "-o", str(tmp_path)]) == 0
    for n in NAMES:
        got, want = (yaml.safe_load(f.read_text()) for f in (tmp_path / f"{n}.yaml", presets.PRESETS_DIR / f"{n}.yaml"))
        assert _any_stable_release(got) == _any_stable_release(want)


def test_cli_errors(tmp_path, capsys):
    assert main(["presets", "--extract", str(tmp_path / "missing")]) == 2
    assert "no such kernel tree" in capsys.readouterr().err
    assert main(["presets", "-o", str(tmp_path)]) == 2
    bogus = tmp_path / "bogus.tar.xz"
    bogus.write_bytes(b"not a tarball")
    assert main(["presets", "--extract", str(bogus)]) == 2
    empty = tmp_path / "tree"
    (empty / "Makefile").parent.mkdir()
    (empty / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n")
    assert main(["presets", "--extract", str(empty), "-o", str(tmp_path / "out")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the readers ----------------------------------------------------------------------------------

def _parse(files: dict[str, str], top: str = "a/top.dtsi") -> dts.Tree:
    return dts.parse(top, files.__getitem__)


def test_dts_parser_nodes_labels_overlays_and_values():
    files = {
        "a/base.dtsi": """
            // SPDX comment
            #include <dt-bindings/clock/x.h>
            #define FOO 3
            / {
                #address-cells = <2>;
                cpus {
                    cpu_b0: cpu@100 {
                        compatible = "arm,cortex-a72";
                        clocks = <&cru ARMCLKB>;
                        interrupts = <GIC_PPI 7 (GIC_CPU_MASK_SIMPLE(6) | IRQ_TYPE_LEVEL_LOW)>;
                        dynamic-power-coefficient = <436>;   /* uW/MHz/V^2 */
                        cpu-idle-states = <&SLEEP>;
                        drop-me;
                    };
                    idle-states {
                        SLEEP: cpu-sleep@0 {
                            entry-latency-us = <120>;
                            exit-latency-us = <0xfa>;
                            min-residency-us = <900>;
                        };
                    };
                };
                gone { x = <1>; };
            };
        """,
        "a/top.dtsi": """
            #include "base.dtsi"
            / {
                table: opp-table-1 {
                    opp00 { opp-hz = /bits/ 64 <408000000>; opp-microvolt = <825000 825000 1250000>; };
                    bytes = [00 1f], "two", "strings";
                    led = LED_FUNCTION_STATUS;
                };
                /delete-node/ gone;
            };
            &cpu_b0 {
                operating-points-v2 = <&table>;
                /delete-property/ drop-me;
            };
        """,
    }
    t = _parse(files)
    assert t.files == ["a/top.dtsi", "a/base.dtsi"]
    cpu = t.label("cpu_b0")
    assert cpu.path == "/cpus/cpu@100" and cpu.basename == "cpu"
    assert cpu.u32("dynamic-power-coefficient") == 436
    assert cpu.refs("operating-points-v2") == ["table"] and cpu.refs("cpu-idle-states") == ["SLEEP"]
    assert cpu.cells("clocks") == [dts.Ref("cru"), dts.Symbol("ARMCLKB")]
    assert cpu.cells("interrupts")[2] == dts.Symbol("(GIC_CPU_MASK_SIMPLE(6) | IRQ_TYPE_LEVEL_LOW)")
    assert not cpu.has("drop-me")
    assert cpu.origins == ["a/base.dtsi:8", "a/top.dtsi:11"]
    assert t.label("SLEEP").u32("exit-latency-us") == 250
    opp = t.label("table").children["opp00"]
    assert opp.props["opp-hz"] == [dts.Cells(64, (408_000_000,))]
    assert opp.ints("opp-microvolt") == [825_000, 825_000, 1_250_000]
    assert t.label("table").props["bytes"] == [b"\x00\x1f", "two", "strings"]
    assert t.label("table").props["led"] == [dts.Symbol("LED_FUNCTION_STATUS")]
    assert "gone" not in t.root.children
    assert t.root.props["#address-cells"] == [dts.Cells(32, (2,))]


def test_dts_parser_includes_inside_a_node_and_errors():
    t = _parse({"x/top.dts": '/dts-v1/;\n/ {\n\tzones {\n#include "frag.dtsi"\n\t};\n};\n',
                "x/frag.dtsi": "cpu-thermal { polling-delay = <1000>; };\n"}, "x/top.dts")
    assert t.node("/zones/cpu-thermal").u32("polling-delay") == 1000
    with pytest.raises(dts.DtsError, match=r"x/top.dts:2: no node labelled nope"):
        _parse({"x/top.dts": "/ { };\n&nope { };\n"}, "x/top.dts")
    with pytest.raises(dts.DtsError, match=r"x/top.dts:1: expected"):
        _parse({"x/top.dts": "/ { a = <1> };"}, "x/top.dts")
    with pytest.raises(dts.DtsError, match="cannot read"):
        _parse({"x/top.dts": '#include "missing.dtsi"\n'}, "x/top.dts")
    with pytest.raises(dts.DtsError, match="nested more than"):
        _parse({"x/top.dts": '#include "top.dts"\n'}, "x/top.dts")


def test_intel_idle_table_reader_drops_unusable_entries_only_when_flagged():
    text = """
static struct cpuidle_state foo_cstates[] __initdata = {
	{
		.name = "C1",
		.desc = "MWAIT 0x00",
		.flags = MWAIT2flg(0x00),
		.exit_latency = 2,
		.target_residency = 2,
		.enter = &intel_idle, },
	{
		.name = "C6",
		.flags = MWAIT2flg(0x20) | CPUIDLE_FLAG_UNUSABLE,
		.exit_latency = 0x55,
		.target_residency = 200,
		.enter = &intel_idle, },
	{
		.enter = NULL }
};
"""
    table = presets.intel_idle_table(text, "foo_cstates")
    assert [(e["name"], e["exit_latency_us"], e["target_residency_us"]) for e in table] == \
        [("C1", 2, 2), ("C6", 85, 200)]
    assert table[1]["flags"] == ["MWAIT2flg(0x20)", "CPUIDLE_FLAG_UNUSABLE"]
    assert table[0]["table_line"] == 2
