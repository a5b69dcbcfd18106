"""The HTML report (`python -m harness report RUN_DIR... -o FILE.html`) on the committed example
runs: one self-contained file, faceted by arch, every section present, failed cells named and kept
out of the figures, intervals at the repeat level, and a page a headless browser renders cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import paths, records
from harness.analysis import html_report
from harness.analysis.runs import load_run
from harness.cli import main
from harness.records import CellResult

EXAMPLES = paths.REPO_ROOT / "results" / "examples"
SECTIONS = ("left-out", "tails", "quantiles", "pareto", "residency", "timelines", "decomposition", "provenance")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def copy_example(tmp: Path, name: str) -> Path:
    """An example run in a scratch place: `report` rewrites summary.txt and the plot in the run dir."""
    return Path(shutil.copytree(EXAMPLES / name, tmp / name))


def section(page: str, name: str) -> str:
    m = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert m, f"no section {name}"
    return m.group(1)


def assert_self_contained(page: str) -> None:
    """Nothing to fetch: no URL at all, no src= or href= but in-page anchors, no script, no @import."""
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|iframe|img|object|embed)\b", page, re.I)
    assert "@import" not in page and not re.search(r"url\((?!#)", page)             # clip paths: url(#id)
    assert set(re.findall(r'\b(?:src|href)="([^"#][^"]*)"', page)) == set()


@pytest.fixture(scope="module")
def two_arches(tmp_path_factory) -> Path:
    """One report of an x86_64 and an arm64 run, made the way a user makes it."""
    tmp = tmp_path_factory.mktemp("two")
    out = tmp / "report.html"
    assert main(["report", str(copy_example(tmp, "window-v2-x86")), str(copy_example(tmp, "dvfs_ramp-v2-arm64")),
                 "-o", str(out)]) == 0
    return out


def test_one_run_builds_one_self_contained_page_with_every_section(tmp_path, capsys):
    run = copy_example(tmp_path, "window-v2-x86")
    (run / records.SUMMARY).unlink()
    out = tmp_path / "out" / "window.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert f"html report: {out}" in capsys.readouterr().out
    assert (run / records.SUMMARY).exists() and (run / records.CDF_PLOT).exists()   # what report always wrote
    assert [p.name for p in out.parent.iterdir()] == ["window.html"]                  # one file, nothing beside it
    page = out.read_text()
    assert_self_contained(page)
    for name in SECTIONS:
        section(page, name)
    assert page.count("<svg") == 4          # tails, timeline, latency vs energy, residency: one x86_64 facet each
    assert re.findall(r'<div class="facet" id="tails-([\w-]+)">', page) == ["x86_64"]
    q = section(page, "quantiles")
    for cell in ("x86_64-agent", "x86_64-floor", "x86_64-stock", "x86_64-t3000", "x86_64-t5700"):
        assert cell in q and cell in section(page, "provenance")
    assert "hierarchical bootstrap" in q and "Repeats per cell: 3" in q and "2000 resamples" in q
    assert "2433.1 [2432.9, 2433.4]" in q                     # step p50 of the agent, 5 digits where 4 collide
    assert "e+0" not in page
    p = section(page, "pareto")
    assert "eta" in p and "0.9639" in p                       # the record's eta, stated
    prov = section(page, "provenance")
    assert "tcg, QEMU virtual time (-icount)" in prov and "e03d491ead33cfb20aa093e8" in prov and "6.12.117+" in prov
    assert "QEMU emulator version" in prov and "window-v2b-x86" in prov
    assert "no per-step decomposition" in section(page, "decomposition")


def test_two_runs_one_facet_per_arch(two_arches):
    page = two_arches.read_text()
    assert_self_contained(page)
    for name in SECTIONS:
        section(page, name)
    for arch in ("x86_64", "arm64"):
        assert f'id="fig-tail-{arch}"' in page and f'id="fig-timeline-{arch}"' in page
    assert 'id="fig-pareto-x86_64-0"' in page and 'id="fig-pareto-arm64-0"' in page
    assert page.count("<svg") == 8
    facets = dict(re.findall(r'<div class="facet" id="quantiles-([\w-]+)">(.*?)</div>', page, re.S))
    assert set(facets) == {"x86_64", "arm64"}
    assert "arm64-" not in facets["x86_64"] and "x86_64-" not in facets["arm64"]      # arches never share a table
    assert "window-v2-x86/x86_64-agent" in facets["x86_64"]                           # several runs: run/cell


def test_failed_and_unusable_cells_are_named_and_left_out_of_every_figure(tmp_path):
    run = copy_example(tmp_path, "window-v2-x86")
    p = run / "x86_64-t5700" / records.CELL_RESULT
    rec = records.read(p, CellResult)
    records.write(p, rec.model_copy(update={"status": "failed", "failure": "hang",
                                            "reason": "guest timed out <during> the workload"}))
    t = run / "x86_64-t3000" / records.CELL_RESULT
    t.write_text(t.read_text()[:200])                                                 # truncated
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text()
    left = section(page, "left-out")
    assert "x86_64-t5700" in left and "failed: guest timed out &lt;during&gt; the workload" in left   # escaped
    assert "x86_64-t3000" in left and "not JSON" in left
    for name in ("tails", "quantiles", "pareto", "timelines"):
        assert "x86_64-t5700" not in section(page, name) and "x86_64-t3000" not in section(page, name)
    assert "failed: hang" in section(page, "provenance")
    assert page.count("<svg") == 4


def test_without_a_power_model_the_bound_points_are_joined(tmp_path, monkeypatch):
    """A record whose spec gives no platform model (an older or hand-made one) still gets its point
    and its bound at its own latency; only the curve over latency needs the model."""
    from harness.analysis import report_figures

    def no_model(spec):
        raise KeyError("platform")

    monkeypatch.setattr(report_figures, "record_model", no_model)
    run = copy_example(tmp_path, "window-v2-x86")
    page = html_report.build([load_run(run)])
    assert 'id="fig-pareto-x86_64-0"' in page and "0.9639" in section(page, "pareto")


def test_quantile_intervals_resample_repeats_not_pooled_steps(tmp_path):
    """Repeats 300 us apart: the p50 interval covers that spread (a pooled-steps interval would be
    a few us wide); the value is the pooled quantile."""
    run = copy_example(tmp_path, "window-v2-x86")
    steps = run / "x86_64-agent" / records.CELL_STEPS
    head, *rows = steps.read_text().splitlines()
    shifted = []
    for line in rows:
        f = line.split(",")
        f[5] = f"{float(f[5]) + 300 * int(f[0]):.3f}"
        shifted.append(",".join(f))
    steps.write_text("\n".join([head, *shifted]) + "\n")
    data = load_run(run)
    cell = next(c for c in data.ok if c.id == "x86_64-agent")
    view = html_report._views([data], ["run"])
    agent = next(v for _, v in view if v.label == "x86_64-agent")
    row = html_report.quantile_rows([agent], {"x86_64-agent": cell})[0]
    value, lo, hi = (float(x) for x in re.findall(r"[\d.]+", row["metrics"]["step_us"][0]))
    assert value == pytest.approx(np.percentile(cell.steps()["step_us"], 50), abs=0.5)    # 4 digits shown
    assert hi - lo > 250 and row["level"] == "repeats+steps" and row["repeats"] == 3


@pytest.mark.parametrize(("value", "lo", "hi", "text"), [
    (1.0012, 1.0004, 1.0031, "1.001 [1.000, 1.003]"),
    (2433.135, 2432.9, 2433.4, "2433.1 [2432.9, 2433.4]"),
    (12345.6, 11000.0, 18038.0, "12346 [11000, 18038]"),
    (5.858, 5.858, 5.858, "5.858 [5.858, 5.858]"),
    (float("nan"), 1.0, 2.0, "-"),
])
def test_intervals_have_enough_digits_and_no_exponents(value, lo, hi, text):
    assert html_report.fmt_ci(value, lo, hi) == text


def test_output_must_be_html(tmp_path, capsys):
    assert main(["report", str(copy_example(tmp_path, "window-v2-x86")), "-o", str(tmp_path / "r.txt")]) == 2
    assert "HTML" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it: "
                    "apt-get install -y --no-install-recommends chromium)")
def test_a_headless_browser_renders_every_figure_without_console_errors(two_arches, tmp_path):
    """Chromium, offline (every host resolves to nothing): the page logs nothing to the console, its
    DOM holds every figure, and its screenshot is a picture, not a blank page."""
    from PIL import Image

    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND"]
    url = two_arches.resolve().as_uri()
    shot = tmp_path / "page.png"
    r = subprocess.run([*base, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
                        "--window-size=1400,4000", url], capture_output=True, text=True, timeout=120)
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    img = Image.open(shot)
    assert img.format == "PNG" and img.size == (1400, 4000)
    pixels = np.asarray(img.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50             # text, lines, colours: not blank
    assert (pixels < 200).any(axis=2).mean() > 0.02
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    figures = re.findall(r'<figure class="plot" id="([\w-]+)">\s*<svg', dom)
    assert sorted(figures) == sorted(re.findall(r'<figure class="plot" id="([\w-]+)">', two_arches.read_text()))
    assert len(figures) == 8
