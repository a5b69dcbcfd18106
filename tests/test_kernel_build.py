"""The real kernel pipeline on Debian's linux-source-6.12: one x86_64 build (cached after the
first run), config checks on both arches, and the patch-series round trip. Marked `kernel`:
slow on a cold cache (tens of minutes), seconds on a warm one."""

import time

import pytest

from harness import paths
from harness.cli import kernel_requests, main
from harness.kernel import kconfig, series
from harness.kernel.build import ConfigError, KernelBuilder, KernelRequest, _config_body
from harness.kernel.cache import BuildCache
from harness.kernel.devtree import export_patches, make_dev_tree
from harness.spec import load_experiment

pytestmark = pytest.mark.kernel
EXAMPLE = paths.EXPERIMENTS_DIR / "dvfs_ramp.yaml"


@pytest.fixture(scope="module")
def builder():
    return KernelBuilder(BuildCache())


def x86_request(**kw):
    (req,) = kernel_requests(load_experiment(EXAMPLE), "x86_64", "agent-off")
    return KernelRequest(**{**req.__dict__, **kw})


def test_x86_64_build_then_cache_hit(builder):
    req = x86_request()
    first = builder.build(req)
    meta = first.metadata
    assert first.image.name == "bzImage" and first.image.stat().st_size > 1_000_000
    assert first.vmlinux.stat().st_size > first.image.stat().st_size
    assert meta["arch"] == "x86_64" and meta["variant"] == "agent-off"
    assert meta["kernel_release"].startswith("6.12.")
    assert meta["toolchain"]["gcc"].startswith("gcc")
    assert [p["name"] for p in meta["patches"]] == [p.name for p in series.load_series(req.series)]
    assert {p["name"].split("/")[0] for p in meta["patches"]} == {"sim-platform", "agent-latency"}
    final = kconfig.read_config(first.config)
    assert kconfig.unmet(req.requests(), final) == []
    assert final["DEBUG_INFO_BTF"] == "y" and final["CPU_FREQ_GOV_SCHEDUTIL"] == "y"
    assert final["CPUFREQ_SIM"] == "y" and final["CPU_IDLE_SIM"] == "y"
    assert "AGENT_LATENCY" not in final

    t0 = time.monotonic()
    again = builder.build(req)
    hit_seconds = time.monotonic() - t0
    assert again.cached and again.key == first.key and again.dir == first.dir
    print(f"cache hit in {hit_seconds:.3f}s")
    assert (first.dir / "metadata.json").stat().st_mtime == (again.dir / "metadata.json").stat().st_mtime


def test_plan_marks_the_built_kernel(builder, capsys):
    builder.build(x86_request())
    assert main(["plan", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if "x86_64-stock" in ln)
    assert "yes" in row
    assert "kernels needed: 4" in out


def test_agent_on_and_off_differ_only_in_the_symbol(builder, tmp_path):
    """The stock and window kernels differ in the window alone, and in the KUnit framework that runs
    the window's arithmetic tests once at boot (agent-latency-on.config)."""
    with builder.tree_for(x86_request()) as tree:
        off = builder.configure(x86_request(), tree, tmp_path / "off")
        on = builder.configure(x86_request(agent_latency=True), tree, tmp_path / "on")
    a, b = set(_config_body(off).splitlines()), set(_config_body(on).splitlines())
    assert a - b == {"# CONFIG_AGENT_LATENCY is not set", "# CONFIG_KUNIT is not set"}
    # what the window kernel builds in beyond the stock one (KUnit also makes its tests' symbols
    # visible, all "is not set")
    enabled = {x for x in b - a if not x.startswith("#")}
    assert {x for x in enabled if not x.startswith("CONFIG_KUNIT")} == \
        {"CONFIG_AGENT_LATENCY=y", "CONFIG_AGENT_LATENCY_KUNIT_TEST=y"}
    assert "CONFIG_KUNIT=y" in enabled
    assert all(x.endswith(" is not set") for x in b - a if x.startswith("#"))
    assert builder.request_key(x86_request())[0] != builder.request_key(x86_request(agent_latency=True))[0]


def test_dropped_symbol_names_it_and_its_unmet_dependency(builder, tmp_path):
    """The arm64 case from vng --kconfig: DEBUG_INFO_REDUCED silently drops DEBUG_INFO_BTF."""
    req = KernelRequest(arch="arm64", extra=(("CONFIG_DEBUG_INFO_REDUCED", "y"),))
    with builder.tree_for(req) as tree, pytest.raises(ConfigError) as exc:
        builder.configure(req, tree, tmp_path / "obj")
    msg = str(exc.value)
    assert "CONFIG_DEBUG_INFO_BTF: kernel/configs/tracing.config:" in msg
    assert "`depends on !DEBUG_INFO_SPLIT && !DEBUG_INFO_REDUCED` (DEBUG_INFO_REDUCED=y" in msg
    assert exc.value.exit_code == 2


def test_symbol_the_stock_tree_lacks_is_an_error(builder, tmp_path):
    req = KernelRequest(arch="x86_64", series=(), agent_latency=True)
    with builder.tree_for(req) as stock, \
            pytest.raises(ConfigError, match="CONFIG_AGENT_LATENCY: .* no Kconfig in this tree defines it"):
        builder.configure(req, stock, tmp_path / "obj")


@pytest.fixture(scope="module")
def agent_latency_tree(tmp_path_factory):
    """One editable tree of both series, editing agent-latency (a clone of the source and a dozen
    `git am`s: made once for the tests below; a test that commits to it takes its commit back)."""
    return make_dev_tree(tmp_path_factory.mktemp("dev") / "linux", ["sim-platform", "agent-latency"],
                         "agent-latency")


@pytest.mark.parametrize("edit", [pytest.param("sim-platform", marks=pytest.mark.extended), "agent-latency"])
def test_series_round_trips_through_an_editable_tree(tmp_path, edit, request):
    dev = (request.getfixturevalue("agent_latency_tree") if edit == "agent-latency" else
           make_dev_tree(tmp_path / "linux", ["sim-platform", "agent-latency"], edit))
    out = tmp_path / "patches"
    res = export_patches(dev, patches_dir=out)
    assert res.clean, res.checkpatch
    committed = sorted((paths.PATCHES_DIR / edit).glob("*.patch"))
    assert [f.name for f in res.files] == [f.name for f in committed]
    for new, old in zip(res.files, committed, strict=True):
        assert new.read_bytes() == old.read_bytes(), f"{new.name} does not round-trip"


def test_export_runs_checkpatch_and_flags_problems(tmp_path, agent_latency_tree):
    import subprocess

    dev = agent_latency_tree
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    (dev / "kernel" / "Kconfig.agent_latency").write_text(
        (dev / "kernel" / "Kconfig.agent_latency").read_text() + "\n# trailing space \n")
    subprocess.run(["git", "-C", str(dev), "commit", "-qam", "bad: no sign-off"], check=True, env=env)
    try:
        res = export_patches(dev, patches_dir=tmp_path / "out")
    finally:
        subprocess.run(["git", "-C", str(dev), "reset", "-q", "--hard", "HEAD~1"], check=True, env=env)
    n = len(list((paths.PATCHES_DIR / "agent-latency").glob("*.patch")))
    assert len(res.files) == n + 1 and res.files[-1].name.startswith(f"{n:04d}-bad")
    assert not res.clean
    assert "trailing whitespace" in res.checkpatch and "Signed-off-by" in res.checkpatch
