"""The agent-workload features of the loop (issue 15): per-step compute distributions, the periodic
control loop's deadline misses, multi-agent fan-out / fan-in; their spec, command line, records,
and the profiles in experiments/agents/. The loop runs on the host here (its logic, not its
latencies: those need a guest)."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from harness.analysis.steps import COLUMNS, EXTENDED_COLUMNS, cell_stats, fanin_ns, parse_steps_csv, steps_from_columns
from harness.guest import protocol
from harness.spec import load_experiment
from harness.spec.model import WorkloadSpec
from harness.workload.command import workload_args

AGENTS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "agents"
BASE_SUMMARY_KEYS = ["steps", "agents", "wait", "wake_p50_us", "wake_p99_us", "agent_marked", "uclamp_min", "out"]


def run_loop(agentloop, out: Path, *args: str) -> tuple[dict, dict]:
    proc = subprocess.run([str(agentloop), "--out", str(out), *args], check=True, capture_output=True, text=True,
                          timeout=120)
    return json.loads(proc.stdout), parse_steps_csv(out.read_text(), out.name, warmup=True)


def test_without_the_new_options_the_output_format_is_the_original(agentloop, tmp_path):
    summary, cols = run_loop(agentloop, tmp_path / "s.csv", "--steps", "20", "--warmup", "2", "--wait-us", "50",
                             "--compute-units", "500", "--burst-every", "4", "--burst-units", "900")
    assert (tmp_path / "s.csv").read_text().partition("\n")[0] == ",".join(COLUMNS)
    assert list(summary) == BASE_SUMMARY_KEYS
    assert "units" not in cols


def test_uniform_compute_is_per_step_bounded_seeded_and_leaves_the_waits_alone(agentloop, tmp_path):
    common = ["--steps", "300", "--warmup", "0", "--dist", "exponential", "--wait-us", "20", "--seed", "9"]
    uni = ["--compute-dist", "uniform", "--compute-min-units", "1000", "--compute-max-units", "5000"]
    _, a = run_loop(agentloop, tmp_path / "a.csv", *common, *uni)
    _, b = run_loop(agentloop, tmp_path / "b.csv", *common, *uni)
    _, fixed = run_loop(agentloop, tmp_path / "c.csv", *common, "--compute-units", "3000")
    assert (tmp_path / "a.csv").read_text().partition("\n")[0] == ",".join(EXTENDED_COLUMNS)
    assert np.array_equal(a["units"], b["units"])                       # deterministic given --seed
    assert a["units"].min() >= 1000 and a["units"].max() <= 5000 and len(set(a["units"].tolist())) > 250
    assert np.array_equal(a["wait_ns"], fixed["wait_ns"])               # the waits' stream is untouched
    _, other = run_loop(agentloop, tmp_path / "d.csv", *common[:-1], "10", *uni)
    assert not np.array_equal(a["units"], other["units"])


def test_lognormal_compute_has_the_median_and_p99_asked_for(agentloop, tmp_path):
    w = WorkloadSpec.model_validate({"steps": 4000, "warmup": 0, "wait": {"us": 1},
                                     "compute": {"distribution": "lognormal", "median_units": 2000,
                                                 "p99_units": 40000}})
    args = workload_args(w, 0, str(tmp_path / "l.csv"), str(agentloop))
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    units = parse_steps_csv((tmp_path / "l.csv").read_text(), "l.csv")["units"]
    assert np.percentile(units, 50) == pytest.approx(2000, rel=0.08)
    assert np.percentile(units, 99) == pytest.approx(40000, rel=0.25)
    capped = subprocess.run([str(agentloop), "--steps", "500", "--warmup", "0", "--wait-us", "1", "--compute-dist",
                             "lognormal", "--compute-mu", "8", "--compute-sigma", "2", "--compute-max-units", "9000",
                             "--out", str(tmp_path / "m.csv")], check=True, capture_output=True, timeout=120)
    assert capped.returncode == 0
    assert parse_steps_csv((tmp_path / "m.csv").read_text(), "m.csv")["units"].max() == 9000


def test_compute_from_a_file_cycles_the_recorded_values(agentloop, tmp_path):
    (tmp_path / "trace.txt").write_text("100\n2500\n70\n")
    _, cols = run_loop(agentloop, tmp_path / "f.csv", "--steps", "7", "--warmup", "1", "--wait-us", "1",
                       "--compute-dist", "file", "--compute-file", str(tmp_path / "trace.txt"))
    assert cols["units"].tolist() == [100, 2500, 70, 100, 2500, 70, 100, 2500]


def test_a_periodic_loop_releases_on_the_period_and_counts_its_misses(agentloop, tmp_path):
    light, cols = run_loop(agentloop, tmp_path / "p.csv", "--steps", "200", "--warmup", "5", "--wait", "timerfd",
                           "--period-us", "2000", "--compute-units", "10")
    gaps = np.diff(cols["signal_ns"])
    assert (gaps % 2_000_000 == 0).all() and (gaps >= 2_000_000).all()   # releases sit on the period's grid
    assert light["deadline_misses"] == int(cols["missed"][cols["warmup"] == 0].sum())
    # a step that computes for much longer than the period misses every deadline and skips ticks
    heavy, hcols = run_loop(agentloop, tmp_path / "h.csv", "--steps", "20", "--warmup", "0", "--wait", "timerfd",
                            "--period-us", "100", "--compute-units", "3000000")
    assert heavy["deadline_misses"] == 20 and hcols["missed"].all() and heavy["ticks_skipped"] > 20
    steps = steps_from_columns([parse_steps_csv((tmp_path / "h.csv").read_text(), "h.csv")])
    st = cell_stats(steps, deadlines=True)
    assert st.deadline_misses == 20 and st.deadline_miss_fraction == 1.0
    # the light loop's misses are what the records say too (whatever the host's noise made them)
    lst = cell_stats(steps_from_columns([parse_steps_csv((tmp_path / "p.csv").read_text(), "p.csv")]), deadlines=True)
    assert lst.deadline_misses == light["deadline_misses"]


def test_fanout_signals_every_agent_at_once_and_waits_for_all(agentloop, tmp_path):
    summary, cols = run_loop(agentloop, tmp_path / "f.csv", "--steps", "80", "--warmup", "0", "--agents", "3",
                             "--fanout", "--wait", "futex", "--dist", "exponential", "--wait-us", "100",
                             "--compute-dist", "uniform", "--compute-min-units", "100", "--compute-max-units", "50000")
    assert summary["fanout"] == 1
    signal = cols["signal_ns"].reshape(3, 80)
    done = cols["done_ns"].reshape(3, 80)
    assert (signal == signal[0]).all()                    # one stamp per step, shared
    assert (signal[0][1:] >= done[:, :-1].max(axis=0)).all()   # fan-in: no step starts before all are done
    assert (cols["wait_ns"].reshape(3, 80) == cols["wait_ns"][:80]).all()
    s = steps_from_columns([cols | {"repeat": np.zeros(240, dtype=np.int64)}])
    assert np.array_equal(fanin_ns(s), (done - signal).max(axis=0))
    assert cell_stats(s, fanout=True).fanin_p50_us == pytest.approx(np.percentile((done - signal).max(axis=0), 50)
                                                                    / 1000)


def test_the_loop_refuses_inconsistent_agent_options(agentloop):
    for args in (["--compute-dist", "uniform", "--compute-min-units", "5", "--compute-max-units", "4"],
                 ["--compute-dist", "lognormal", "--compute-mu", "nan", "--compute-sigma", "1"],
                 ["--compute-dist", "file"], ["--compute-dist", "uniform", "--compute-max-units", "9",
                                              "--burst-every", "2", "--burst-units", "5"],
                 ["--period-us", "1000"], ["--wait", "timerfd", "--period-us", "20000000"],
                 ["--fanout"], ["--fanout", "--agents", "2", "--wait", "timerfd"]):
        proc = subprocess.run([str(agentloop), "--steps", "2", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)


# -- the spec and the command line -----------------------------------------------------------------

@pytest.mark.parametrize("body,words", [
    ({"compute": {"distribution": "lognormal", "median_units": 10}}, "either mu and sigma"),
    ({"compute": {"distribution": "lognormal", "median_units": 10, "p99_units": 5}}, "below median_units"),
    ({"compute": {"distribution": "lognormal", "mu": 5, "sigma": 1, "p99_units": 50}}, "either mu and sigma"),
    ({"compute": {"distribution": "uniform", "min_units": 9, "max_units": 5}}, "min_units <= max_units"),
    ({"compute": {"distribution": "uniform", "min_units": 1, "max_units": 5, "sigma": 1}}, "not a parameter"),
    ({"compute": {"distribution": "file"}}, "needs file"),
    ({"compute": {"distribution": "uniform", "min_units": 1, "max_units": 5}, "compute_units": 3}, "would not be used"),
    ({"compute": {"distribution": "uniform", "min_units": 1, "max_units": 5}, "burst_every": 3, "burst_units": 9},
     "would not be used"),
    ({"wait": {"kind": "futex", "period_us": 1000}}, "needs kind 'timerfd'"),
    ({"wait": {"kind": "timerfd", "period_us": 1000, "distribution": "uniform", "min_us": 1, "max_us": 2}},
     "would not be used"),
    ({"fanout": True}, "agents >= 2"),
    ({"fanout": True, "agents": 2, "wait": {"kind": "nanosleep"}}, "world thread"),
])
def test_spec_refuses_inconsistent_agent_workloads(body, words):
    with pytest.raises(ValidationError, match=words):
        WorkloadSpec.model_validate(body)


def test_a_records_dump_of_an_agent_workload_validates_again():
    """Records keep the cell's spec as a full dump (defaults and None included); `decompose` and
    the other offline tools validate it again."""
    from harness.analysis.decompose import spec_of
    from harness.spec.model import CellSpec
    for body in ({"wait": {"kind": "timerfd", "period_us": 1000},
                  "compute": {"distribution": "uniform", "min_units": 1, "max_units": 5}},
                 {"agents": 2, "fanout": True, "compute": {"distribution": "lognormal", "mu": 5, "sigma": 1}}):
        spec = CellSpec.model_validate({"workload": body})
        assert spec_of(spec.model_dump(mode="json")) == spec


def test_command_line_carries_the_agent_options_and_nothing_else_without_them():
    plain = workload_args(WorkloadSpec(), 0, "/mnt/s.csv", "agentloop")
    assert not any(a.startswith(("--compute-dist", "--period-us", "--fanout")) for a in plain)
    w = WorkloadSpec.model_validate({"agents": 4, "fanout": True, "compute": {
        "distribution": "lognormal", "median_units": 1000, "p99_units": 10000}})
    args = workload_args(w, 0, "/mnt/s.csv", "agentloop")
    mu, sigma = float(args[args.index("--compute-mu") + 1]), float(args[args.index("--compute-sigma") + 1])
    assert math.exp(mu) == pytest.approx(1000) and math.exp(mu + 2.3263478740408408 * sigma) == pytest.approx(10000)
    assert "--fanout" in args and args[args.index("--compute-max-units") + 1] == "200000000"
    t = WorkloadSpec.model_validate({"wait": {"kind": "timerfd", "period_us": 1000}})
    assert workload_args(t, 0, "/mnt/s.csv", "agentloop")[-2:] == ["--period-us", "1000"]
    f = WorkloadSpec.model_validate({"compute": {"distribution": "file", "file": "trace.txt"}})
    with pytest.raises(ValueError, match="guest path"):
        workload_args(f, 0, "/mnt/s.csv", "agentloop")
    text = protocol.render(f, repeats=1)
    assert f"--compute-file /mnt/{protocol.COMPUTE_FILE}" in text


def test_a_missing_compute_file_is_an_input_error_at_its_line(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nkernel: {series: [sim-platform], fragments: [base, sim-platform]}\n"
                 "workload:\n  compute: {distribution: file, file: nowhere.txt}\n")
    from harness.errors import InputError
    with pytest.raises(InputError, match=r"e.yaml:4:.*compute file .*nowhere.txt"):
        load_experiment(f)


# -- the profiles -----------------------------------------------------------------------------------

PROFILES = ("token_stream", "tool_call", "retrieval", "control_loop", "contention", "multi_agent")
QUICK_VARIANTS = ("stock", "agent", "floor")


def test_every_profile_has_a_full_and_a_quick_scale_that_load():
    assert sorted(p.stem for p in AGENTS_DIR.glob("*.yaml")) == sorted(PROFILES)
    assert sorted(p.stem for p in (AGENTS_DIR / "quick").glob("*.yaml")) == sorted(PROFILES)
    for name in PROFILES:
        for f in (AGENTS_DIR / f"{name}.yaml", AGENTS_DIR / "quick" / f"{name}.yaml"):
            text = f.read_text()
            assert text.startswith(f"# {name.replace('_', '-')}:") and "Scale factors:" in text, f
            load_experiment(f)


@pytest.mark.parametrize("name", PROFILES)
def test_the_quick_scale_is_the_full_one_with_fewer_steps_repeats_and_variants(name):
    """The two scales cannot drift apart: quick differs from full in steps, warm-up, repeats and the
    variant list only, and its variants are the full file's first three, unchanged. Both are probed
    (the decomposition's split of the tax) and run on both arches."""
    full = load_experiment(AGENTS_DIR / f"{name}.yaml").experiment
    quick = load_experiment(AGENTS_DIR / "quick" / f"{name}.yaml").experiment
    assert quick.name == f"{full.name}_quick"
    f, q = full.model_dump(), quick.model_dump()
    for d in (f, q):
        for k in ("name", "repeats", "variants", "description"):
            d.pop(k)
        d["workload"].pop("steps")
        d["workload"].pop("warmup")
    assert f == q
    assert [v.name for v in quick.variants] == list(QUICK_VARIANTS)
    assert quick.variants == full.variants[:3]
    assert quick.workload.steps < full.workload.steps and quick.repeats <= full.repeats
    assert set(full.probes) == {"dvfs_ramp", "wake_path"}
    assert full.arch == ["x86_64", "arm64"] and full.workload.units_for == "x86_64"
    # the full scale has the baselines the spec supports
    assert {v.name for v in full.variants} >= {"floor-poll", "performance", "ratelimit50", "uclamp1024",
                                               "uclamp-cgroup1024", "pmqos0", "idlepoll", "teo", "adpf",
                                               "scx-simple"}


def test_the_profiles_use_the_features_they_model():
    w = {n: load_experiment(AGENTS_DIR / f"{n}.yaml").experiment.workload for n in PROFILES}
    assert w["token_stream"].wait.distribution == "uniform" and w["token_stream"].wait.min_us == 20000
    assert w["tool_call"].compute.distribution == "lognormal"
    assert w["retrieval"].wait.kind == "io_uring" and w["retrieval"].phases.drop_cache_every == 1
    assert w["retrieval"].phases.disk_mb > 0
    assert w["control_loop"].wait.period_us == 1000
    assert w["contention"].agent_cpu is None and w["contention"].hogs and w["contention"].noise_busy_us
    assert w["multi_agent"].fanout and w["multi_agent"].agents > 2


# -- one profile, two arches --------------------------------------------------------------------------

def test_units_written_for_x86_64_give_an_arm64_step_the_same_time_at_fmax():
    """A unit is 12.054 ns at fmax on x86_64 and 6.031 on arm64: `units_for` scales every unit count
    of an arm64 cell once, and its record's spec (units_for: arm64) validates to the same cell."""
    from harness.analysis.decompose import spec_of
    from harness.spec.model import UNIT_NS_AT_FMAX, CellSpec
    cells = {c.id: c.spec for c in load_experiment(AGENTS_DIR / "quick" / "token_stream.yaml").cells}
    x86, arm = cells["x86_64-stock"].workload, cells["arm64-stock"].workload
    assert (x86.compute.min_units, x86.compute.max_units, x86.units_for) == (4148, 24888, "x86_64")
    assert arm.units_for == "arm64"
    for name in ("min_units", "max_units"):
        t_x86 = getattr(x86.compute, name) * UNIT_NS_AT_FMAX["x86_64"]
        t_arm = getattr(arm.compute, name) * UNIT_NS_AT_FMAX["arm64"]
        assert t_arm == pytest.approx(t_x86, abs=UNIT_NS_AT_FMAX["arm64"])
    assert spec_of(cells["arm64-agent"].model_dump(mode="json")) == cells["arm64-agent"]
    ratio = UNIT_NS_AT_FMAX["x86_64"] / UNIT_NS_AT_FMAX["arm64"]
    fixed = CellSpec.model_validate({"arch": "arm64", "workload": {"units_for": "x86_64", "compute_units": 1000,
                                                                   "burst_every": 7, "burst_units": 5000}})
    assert (fixed.workload.compute_units, fixed.workload.burst_units) == (round(1000 * ratio), round(5000 * ratio))
    logn = CellSpec.model_validate({"arch": "arm64", "workload": {"units_for": "x86_64", "compute": {
        "distribution": "lognormal", "mu": 10.0, "sigma": 1.0}}})
    assert logn.workload.compute.mu == pytest.approx(10.0 + math.log(ratio)) and logn.workload.compute.sigma == 1.0
    q = CellSpec.model_validate({"arch": "arm64", "workload": {"units_for": "x86_64", "compute": {
        "distribution": "lognormal", "median_units": 1000, "p99_units": 10000}}}).workload.compute
    assert (q.median_units, q.p99_units) == (pytest.approx(1000 * ratio), pytest.approx(10000 * ratio))
    same = CellSpec.model_validate({"arch": "x86_64", "workload": {"units_for": "x86_64", "compute_units": 1000}})
    assert same.workload.compute_units == 1000


@pytest.mark.parametrize("body, words", [
    ("  units_for: x86_64\n  compute: {distribution: file, file: trace.txt}\n",
     "compute file's units cannot be scaled"),
    ("  units_for: x86_64\n  compute_units: 150000000\n", "more than 200000000"),
    ("  units_for: x86_64\n  compute: {distribution: lognormal, mu: 18.9, sigma: 1}\n",
     "compute.mu 18.9 written for x86_64 is 19.59 on arm64"),
])
def test_units_that_cannot_be_scaled_are_an_input_error_naming_the_file(tmp_path, body, words):
    from harness.errors import InputError
    (tmp_path / "trace.txt").write_text("100\n")
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nkernel: {series: [sim-platform], fragments: [base, sim-platform]}\narch: [x86_64, arm64]\n"
                 "workload:\n" + body)
    with pytest.raises(InputError, match=rf"e.yaml:\d+:\d+: .*{words}"):
        load_experiment(f)


def test_a_variant_for_one_arch_has_no_cell_on_the_other(tmp_path):
    from harness.errors import InputError
    ids = [c.id for c in load_experiment(AGENTS_DIR / "token_stream.yaml").cells]
    assert "x86_64-scx-simple" in ids and "arm64-scx-simple" in ids and len(ids) == 2 * 13
    one = tmp_path / "one.yaml"
    one.write_text("name: one\nkernel: {series: [sim-platform], fragments: [base, sim-platform]}\n"
                   "arch: [x86_64, arm64]\nvariants:\n  - name: a\n  - name: b\n    arch: [arm64]\n")
    assert [c.id for c in load_experiment(one).cells] == ["x86_64-a", "arm64-a", "arm64-b"]
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nkernel: {series: [sim-platform], fragments: [base, sim-platform]}\narch: [x86_64]\n"
                 "variants:\n  - name: a\n  - name: b\n    arch: [x86_64, arm64]\n")
    with pytest.raises(InputError, match=r"e.yaml:7:\d+: variants\[1\]\.arch\[1\]: arm64 is not one of the "
                                         r"experiment's arches"):
        load_experiment(f)
