"""The CI entry point and the workflow matrix stay in line with the README and the CLI."""

import re
import subprocess

import yaml

from harness import paths
from harness.cli import build_parser

WORKFLOW = paths.REPO_ROOT / ".github" / "workflows" / "kernel-matrix.yml"


def readme_test_command() -> str:
    text = (paths.REPO_ROOT / "README.md").read_text()
    m = re.search(r"<!-- test-command -->\s*```sh\n(.+?)\n```", text)
    assert m, "README must mark its test command with <!-- test-command -->"
    return m.group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = (paths.REPO_ROOT / ".ci" / "run").read_text()
    assert readme_test_command() in ci.splitlines()


def check_workflow(path) -> subprocess.CompletedProcess:
    return subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)


def test_workflow_is_valid_and_the_check_catches_mistakes(tmp_path):
    ok = check_workflow(WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    assert check_workflow(broken).returncode != 0


def test_matrix_is_arch_by_config_and_calls_nox_with_valid_choices():
    wf = yaml.safe_load(WORKFLOW.read_text())
    job = wf["jobs"]["kernel"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix["arch"]) == {"x86_64", "arm64"}
    assert set(matrix["config"]) == {"agent-off", "agent-on"}
    runs = [s["run"] for s in job["steps"] if "run" in s]
    build = next(r for r in runs if "build-kernel" in r)
    assert build == "nox -s build-kernel -- --arch ${{ matrix.arch }} --config ${{ matrix.config }}"
    parser = build_parser()
    for arch in matrix["arch"]:
        for config in matrix["config"]:
            args = parser.parse_args(["build", "--arch", arch, "--config", config])
            assert (args.arch, args.config) == (arch, config)


def test_the_full_suite_job_covers_every_profile_on_both_arches_and_never_runs_per_push():
    wf = yaml.safe_load(WORKFLOW.read_text())
    job = wf["jobs"]["suite-full"]
    matrix = job["strategy"]["matrix"]
    agents = paths.REPO_ROOT / "experiments" / "agents"
    assert sorted(matrix["profile"]) == sorted(p.stem for p in agents.glob("*.yaml"))
    assert set(matrix["arch"]) == {"x86_64", "arm64"}
    assert "workflow_dispatch" in job["if"] and "schedule" in job["if"] and "push" not in job["if"]
    run = next(s["run"] for s in job["steps"] if "suite" in s.get("run", ""))
    assert run == ("nox -s suite -- --scale full --arch ${{ matrix.arch }} --only ${{ matrix.profile }} --jobs 2")
