"""Data a reader takes elsewhere: the tidy all-steps table (Parquet and CSV), summary.json, the
experiment JSON Schema, and CSV quoting. All from the committed examples' records or the spec
models; no guest, no build."""

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import paths, records
from harness.analysis import tidy
from harness.analysis.report import write_run_report
from harness.analysis.steps import read_parsed_csv
from harness.cli import main
from harness.probes import agent_window
from harness.spec import load_experiment
from harness.spec.schema import experiment_schema
from harness.spec.yamlsrc import load_yaml

EXAMPLES = paths.REPO_ROOT / "results" / "examples"
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
jsonschema = pytest.importorskip("jsonschema")


def copy_example(tmp_path, name) -> Path:
    dst = tmp_path / name
    # as committed: the tidy tables a local `report` may have left there are not part of it
    shutil.copytree(EXAMPLES / name, dst, ignore=shutil.ignore_patterns(records.TIDY_CSV, records.TIDY_PARQUET))
    return dst


def edit_record(cell_dir: Path, **changes) -> None:
    rec = json.loads((cell_dir / records.CELL_RESULT).read_text())
    rec.update(changes)
    (cell_dir / records.CELL_RESULT).write_text(json.dumps(rec))


# -- the tidy table --------------------------------------------------------------------------------

def test_tidy_parquet_is_every_cells_steps_with_its_identity_and_axes(tmp_path):
    run_dir = copy_example(tmp_path, "dvfs_ramp-v2-x86")
    rep = write_run_report(run_dir)
    assert {p.name for p in rep.tidy} == {records.TIDY_CSV, records.TIDY_PARQUET}
    t = pq.read_table(run_dir / records.TIDY_PARQUET)
    assert t.column_names == ["run", "cell", "arch", "variant", "platform.sim.preset", "repeat", "agent", "step",
                              "wait_us", "wake_us", "step_us", "compute_us", "phases_us", "cpu"]
    assert t.schema.field("repeat").type == pa.int64() and t.schema.field("step_us").type == pa.float64()
    assert t.schema.metadata[b"harness.schema_version"] == str(records.SCHEMA_VERSION).encode()
    rows = t.to_pydict()
    cells = sorted(d for d in run_dir.iterdir() if (d / records.CELL_RESULT).is_file())
    assert len(cells) == 6 and set(rows["cell"]) == {d.name for d in cells}
    total = 0
    for d in cells:
        rec = json.loads((d / records.CELL_RESULT).read_text())
        steps = read_parsed_csv(d / records.CELL_STEPS)
        mine = [i for i, c in enumerate(rows["cell"]) if c == d.name]
        total += len(mine)
        assert len(mine) == len(steps["step"])
        assert {rows["variant"][i] for i in mine} == {rec["variant"]}
        assert {rows["platform.sim.preset"][i] for i in mine} == {rec["axes"]["platform.sim.preset"]}
        assert {rows["run"][i] for i in mine} == {run_dir.name}
        for col in ("step_us", "wake_us", "repeat", "cpu"):
            assert np.array_equal(np.array([rows[col][i] for i in mine], dtype=float), steps[col]), col
    assert total == t.num_rows


def test_tidy_csv_holds_the_same_rows_as_the_parquet(tmp_path):
    run_dir = copy_example(tmp_path, "window-v2-x86")
    write_run_report(run_dir)
    par = pq.read_table(run_dir / records.TIDY_PARQUET).to_pydict()
    with open(run_dir / records.TIDY_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(par)
    assert len(rows) == len(par["cell"]) == 5 * 900
    for i in (0, 1234, len(rows) - 1):
        assert rows[i]["cell"] == par["cell"][i]
        assert float(rows[i]["step_us"]) == par["step_us"][i] and int(rows[i]["step"]) == par["step"][i]


def test_axis_values_with_commas_quotes_and_newlines_round_trip(tmp_path):
    """An axis value is the experiment's (a string may hold anything): the CSV quotes it, the
    Parquet keeps it, and a mapping value is its JSON text."""
    run_dir = copy_example(tmp_path, "window-v2-x86")
    nasty = 'a, "quoted"\nvalue'
    edit_record(run_dir / "x86_64-agent", axes={"workload.label": nasty, "workload.wait.us": 500})
    edit_record(run_dir / "x86_64-stock", axes={"workload.label": {"k": [1, 2]}, "workload.wait.us": 2000.5})
    write_run_report(run_dir)
    for rows in (list(csv.DictReader(open(run_dir / records.TIDY_CSV, newline=""))),
                 pq.read_table(run_dir / records.TIDY_PARQUET).to_pylist()):
        by_cell = {r["cell"]: r for r in rows}
        assert by_cell["x86_64-agent"]["workload.label"] == nasty
        assert by_cell["x86_64-stock"]["workload.label"] == '{"k": [1, 2]}'
        assert by_cell["x86_64-floor"]["workload.label"] in ("", None)      # a cell without that axis
    t = pq.read_table(run_dir / records.TIDY_PARQUET)
    assert t.schema.field("workload.wait.us").type == pa.float64()          # an int and a float: float
    raw = (run_dir / records.TIDY_CSV).read_text()
    assert '"a, ""quoted""\nvalue"' in raw and ',x86_64,stock,' in raw   # quoted only where needed


def test_tidy_table_types_an_axis_by_all_its_values():
    assert tidy._axis_type([1, 2, None]) == "int64"
    assert tidy._axis_type([1, 2.5]) == "float64"
    assert tidy._axis_type([True, False]) == "bool"
    assert tidy._axis_type([True, 1]) == "string"
    assert tidy._axis_type(["a", 1]) == "string"


def test_report_tidy_option_writes_several_runs_in_the_formats_asked(tmp_path, capsys):
    a, b = copy_example(tmp_path, "window-v2-x86"), copy_example(tmp_path, "window-v2-arm64")
    out_p, out_c = tmp_path / "out" / "all.parquet", tmp_path / "all.csv"
    out_p.parent.mkdir()
    assert main(["report", str(a), str(b), "--tidy", str(out_p), "--tidy", str(out_c)]) == 0
    t = pq.read_table(out_p)
    assert set(t.column("run").to_pylist()) == {a.name, b.name}
    assert set(t.column("arch").to_pylist()) == {"x86_64", "arm64"}
    assert sum(1 for _ in open(out_c)) == t.num_rows + 1
    assert f"tidy table: {out_p}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["steps.txt", "steps", "steps.json"])
def test_report_refuses_a_tidy_file_it_cannot_write(tmp_path, capsys, name):
    run_dir = copy_example(tmp_path, "window-v2-x86")
    (run_dir / records.SUMMARY_JSON).unlink()
    assert main(["report", str(run_dir), "--tidy", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --tidy {tmp_path / name}:") and "*.csv or *.parquet" in err
    assert not (run_dir / records.SUMMARY_JSON).exists()        # refused before anything was written


def test_without_pyarrow_the_csv_is_written_and_the_parquet_named_missing(tmp_path, monkeypatch):
    run_dir = copy_example(tmp_path, "window-v2-x86")
    monkeypatch.setattr(tidy, "have_pyarrow", lambda: False)
    rep = write_run_report(run_dir)
    assert [p.name for p in rep.tidy] == [records.TIDY_CSV]
    assert not (run_dir / records.TIDY_PARQUET).exists() and tidy.NO_PYARROW in rep.notes


# -- summary.json ------------------------------------------------------------------------------------

def test_summary_json_is_a_versioned_record_of_every_cell(tmp_path):
    run_dir = copy_example(tmp_path, "window-v2-x86")
    edit_record(run_dir / "x86_64-t3000", status="failed", failure="hang", reason="guest hung")
    (run_dir / "x86_64-t5700" / records.CELL_RESULT).write_text('{"schema_version": 1, "cell": ')   # truncated
    write_run_report(run_dir)
    raw = json.loads((run_dir / records.SUMMARY_JSON).read_text())
    assert raw["schema_version"] == records.SCHEMA_VERSION
    s = records.read(run_dir / records.SUMMARY_JSON, records.RunSummary)
    by = {c.cell: c for c in s.cells}
    assert set(by) == {"x86_64-agent", "x86_64-floor", "x86_64-stock", "x86_64-t3000", "x86_64-t5700"}
    assert by["x86_64-t3000"].status == "failed" and by["x86_64-t3000"].failure == "hang"
    assert by["x86_64-t5700"].status == "unusable" and "not JSON" in by["x86_64-t5700"].reason
    for name in ("x86_64-agent", "x86_64-stock"):
        rec = json.loads((run_dir / name / records.CELL_RESULT).read_text())
        c = by[name]
        assert c.stats.model_dump() == rec["stats"] and c.cell_wall_s == rec["cell_wall_s"]
        assert c.energy_per_step_uj == rec["platform"]["energy_per_step_uj"]
        assert c.eta == rec["platform"]["frontier"]["eta"] and c.variant == rec["variant"]
    assert s.experiment == "window_v2" and s.run_id == json.loads((run_dir / "run.json").read_text())["run_id"]
    # the tidy table leaves out what summary.json names as not ok
    assert set(pq.read_table(run_dir / records.TIDY_PARQUET).column("cell").to_pylist()) == {
        "x86_64-agent", "x86_64-floor", "x86_64-stock"}


def test_summary_json_of_another_schema_version_is_refused(tmp_path):
    run_dir = copy_example(tmp_path, "window-v2-x86")
    write_run_report(run_dir)
    f = run_dir / records.SUMMARY_JSON
    f.write_text(f.read_text().replace('"schema_version": 1', '"schema_version": 2'))
    with pytest.raises(records.RecordError, match="schema_version 2"):
        records.read(f, records.RunSummary)


# -- CSV quoting elsewhere ------------------------------------------------------------------------------

def test_probe_csvs_go_through_the_csv_module():
    ev = agent_window.WindowEvents(opens=[(190, 1, 5, 12, True)], closes=[(190, 1, 7, 3)])
    rows = list(csv.DictReader(io.StringIO(agent_window.to_csv(ev))))
    assert rows == [{"event": "open", "pid": "190", "cpu": "1", "ns": "5", "value": "12", "explicit": "1"},
                    {"event": "close", "pid": "190", "cpu": "1", "ns": "7", "value": "3", "explicit": ""}]


# -- the experiment JSON Schema ---------------------------------------------------------------------------

def schema_from_cli(capsys) -> dict:
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def test_schema_is_valid_json_schema(capsys):
    schema = schema_from_cli(capsys)
    assert schema == experiment_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False and "workload" in schema["properties"]


EXPERIMENTS = sorted((paths.REPO_ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_committed_experiments_validate_against_the_schema(path):
    load_experiment(path)                                  # the loader accepts it ...
    data, _ = load_yaml(path)                              # ... and the schema, on the same values
    errors = list(jsonschema.Draft202012Validator(experiment_schema()).iter_errors(data))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


BAD = {
    "unknown key": ("platform: {governer: schedutil}", ["platform"]),
    "wrong type": ("workload: {steps: '10'}", ["workload", "steps"]),
    "bool for int": ("repeats: true", ["repeats"]),
    "out of bounds": ("repeats: 0", ["repeats"]),
    "bad enum": ("workload: {wait: {kind: carrier-pigeon}}", ["workload", "wait", "kind"]),
    "unknown probe": ("probes: [tcpdump]", ["probes", 0]),
    "no name": ("repeats: 2", []),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_experiment_fails_the_schema_where_the_loader_fails_it(tmp_path, case):
    body, where = BAD[case]
    text = ("" if case == "no name" else "name: bad\n") + body + "\n"
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert main(["validate", str(f)]) == 2
    errors = list(jsonschema.Draft202012Validator(experiment_schema()).iter_errors(yaml.safe_load(text)))
    assert errors
    assert any(list(e.absolute_path)[:len(where)] == where for e in errors), [list(e.absolute_path) for e in errors]


def test_a_preset_fills_the_simulated_platform_in_the_schema_too():
    """platform.sim may name only a preset (its fields come from the preset file)."""
    v = jsonschema.Draft202012Validator(experiment_schema())
    assert v.is_valid({"name": "x", "platform": {"sim": {"preset": "rk3399-a72"}}})
    assert v.is_valid({"name": "x", "kernel": {"config": {"CONFIG_NR_CPUS": 8, "CONFIG_KASAN": True}}})
    assert not v.is_valid({"name": "x", "platform": {"sim": {"opps": "fast"}}})


def test_check_jsonschema_uses_the_printed_schema(tmp_path, capsys):
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -e .[dev])")
    schema = tmp_path / "experiment.schema.json"
    assert main(["schema", "-o", str(schema)]) == 0
    ok = subprocess.run([exe, "--schemafile", str(schema), *map(str, EXPERIMENTS)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nplatform: {governer: schedutil}\n")
    got = subprocess.run([exe, "--schemafile", str(schema), str(bad)], capture_output=True, text=True)
    assert got.returncode == 1 and "governer" in got.stdout + got.stderr


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXAMPLES.glob("*/summary.json")))
def test_committed_summary_json_is_what_report_derives_from_the_records(tmp_path, name):
    run_dir = copy_example(tmp_path, name)
    committed = json.loads((run_dir / records.SUMMARY_JSON).read_text())
    write_run_report(run_dir)
    fresh = json.loads((run_dir / records.SUMMARY_JSON).read_text())
    assert {**committed, "generated": None} == {**fresh, "generated": None}
