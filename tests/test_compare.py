"""The stock -> floor gap closed by a treatment, on synthetic cells with known answers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.compare import compare
from harness.cli import main

GOLDEN = Path(__file__).parent / "golden"


def make_cell(run: Path, name: str, step_us: np.ndarray):
    d = run / name
    d.mkdir(parents=True)
    lines = ["repeat,agent,step,wait_us,wake_us,step_us,compute_us,phases_us,cpu"]
    lines += [f"0,0,{i},1000,10,{s:.3f},{s - 20:.3f},1,0" for i, s in enumerate(step_us)]
    (d / "steps.csv").write_text("\n".join(lines) + "\n")
    spec = {"workload": {"agents": 1, "steps": len(step_us), "warmup": 0}}
    (d / "result.json").write_text(json.dumps({"spec": spec, "repeats": 1}))
    shutil.copy(GOLDEN / "platform-before.txt", d / "platform-r0-before.txt")
    shutil.copy(GOLDEN / "platform-after.txt", d / "platform-r0-after.txt")


def test_gap_closed_and_energy(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = rng.normal(0, 5, 2000)
    run = tmp_path / "run"
    make_cell(run, "x86_64-stock", 1000 + base)
    make_cell(run, "x86_64-floor", 600 + base)
    make_cell(run, "x86_64-agent", 700 + base)     # closes 75 % of the gap
    res = compare(run, "agent")["x86_64"]
    g = res["gap_closed_p50"]
    assert g["value"] == pytest.approx(0.75, abs=0.01) and g["ci95_lo"] < 0.75 < g["ci95_hi"]
    assert g["ci95_hi"] - g["ci95_lo"] < 0.05
    assert res["energy_vs_stock"]["value"] == pytest.approx(1.0)   # same snapshots in every cell
    assert main(["compare", str(run), "--json", str(tmp_path / "c.json")]) == 0
    assert "gap closed p50" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["x86_64"]["gap_closed_p99"]["value"] > 0.5
    assert main(["compare", str(run), "--treatment", "nope"]) == 2
