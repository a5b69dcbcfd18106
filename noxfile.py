"""Developer and CI entry points. Every session runs in the environment `scripts/setup.sh`
prepared (no per-session virtualenv: the kernel toolchain and QEMU are system packages anyway).

    nox -s tests                  the test suite (what .ci/run runs)
    nox -s tests-arm64            arm64 guests end to end (slow when cold)
    nox -s tests-measure          the x86_64 measurement tests (platform calibration): tens of minutes
    nox -s tests-extended         x86_64 checks beyond the CI set (injected delay, probe attach errors, ...)
    nox -s tests-remote           the SSH backend against a real sshd (QEMU test box) and its fault tests
    nox -s build-kernel           build the kernels of experiments/dvfs_ramp.yaml
    nox -s build-kernel -- --arch arm64 --config agent-on
    nox -s smoke                  build, boot and run experiments/smoke.yaml
    nox -s calibrate              the simulated platform's calibration (experiments/sim_platform.yaml)
    nox -s kernel-tree -- ~/src/agent-latency      series -> editable git tree
    nox -s export-patches -- ~/src/agent-latency   git tree -> series (+ checkpatch)
    nox -s checkpatch             checkpatch.pl on every series
    nox -s config-matrix          the series in the configs a build bot tries (both arches, slow)
    nox -s lint                   ruff + workflow schema check
    nox -s bench-build            cold/warm kernel build times
    nox -s suite                  the agent workload suite, quick scale, both arches (benchmarks/agent_suite.py)
    nox -s suite -- --scale full --arch arm64 --only token_stream     one profile of the full scale
"""

from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]


@nox.session
def tests(session):
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(name="tests-arm64")
def tests_arm64(session):
    """arm64 guests end to end (cross-built kernel, mmdebstrap rootfs, TCG): slow when cold."""
    session.run("python", "-m", "pytest", "-m", "arm64", *(session.posargs or ["-q"]))


@nox.session(name="tests-measure")
def tests_measure(session):
    """The measurement tests on x86_64 guests (the simulated platform's calibration): many cells,
    tens of minutes, so CI leaves them to developers and to the workflow matrix."""
    session.run("python", "-m", "pytest", "-m", "measurement and not arm64", *(session.posargs or ["-q"]))


@nox.session(name="tests-extended")
def tests_extended(session):
    """Checks that deepen what `tests` covers (each a boot or a tree): the injected-delay sanity
    check of the loop's latency, bpftrace's own error for a probe that cannot attach, explicit
    windows, and the sim-platform series' round trip through an editable tree."""
    session.run("python", "-m", "pytest", "-m", "extended and not arm64", *(session.posargs or ["-q"]))


@nox.session(name="tests-remote")
def tests_remote(session):
    """Remote targets end to end against a real sshd: the QEMU x86_64 test box (Debian 12 rootfs
    built once with mmdebstrap and cached, throwaway keys), the whole remote flow through the
    runner, and the fault tests (connection refused, host-key mismatch, sshd killed mid-run),
    then kernel deploy: kexec into a harness kernel and back, and kernels that do not boot.
    A few minutes under TCG, so not in `tests`."""
    session.run("python", "-m", "pytest", "-m", "remote", *(session.posargs or ["-q", "-s"]))


@nox.session(name="build-kernel")
def build_kernel(session):
    session.run("python", "-m", "harness", "build", *session.posargs)


@nox.session
def smoke(session):
    """Build, boot and run the small smoke experiment."""
    session.run("python", "-m", "harness", "run", "experiments/smoke.yaml", *session.posargs)


@nox.session
def calibrate(session):
    """Frequency cost, C-state exit cost and the schedutil ramp on the simulated platform, both arches."""
    session.run("python", "-m", "harness", "run", "experiments/sim_platform.yaml", *session.posargs)


@nox.session(name="kernel-tree")
def kernel_tree(session):
    session.run("python", "-m", "harness", "kernel-tree", *session.posargs)


@nox.session(name="export-patches")
def export_patches(session):
    session.run("python", "-m", "harness", "export-patches", *session.posargs)


@nox.session
def checkpatch(session):
    session.run("python", "-m", "harness", "checkpatch", *session.posargs)


@nox.session
def lint(session):
    session.run("ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                ".github/workflows/kernel-matrix.yml")


@nox.session(name="config-matrix")
def config_matrix(session):
    """The series built in the configurations a build bot tries (tinyconfig; CPU_FREQ, CPU_IDLE, SMP,
    CGROUPS, CGROUP_SCHED off; UCLAMP_TASK, SCHED_CLASS_EXT, the preemption models, no jump labels,
    KUnit), both arches, in a tree made from the series: 16 entries per arch (the x86_64 tinyconfig
    entry took 290 s on 2 cores; defconfig entries build only the objects the series touches)."""
    tree = session.posargs[0] if session.posargs else ".nox/config-matrix-tree"
    if not Path(tree, ".git").exists():
        session.run("python", "-m", "harness", "kernel-tree", tree)
    session.run("python", "scripts/config_matrix.py", tree, *session.posargs[1:])


@nox.session
def suite(session):
    """The agent workload suite (experiments/agents/) through benchmarks/agent_suite.py, which runs
    each profile and arch and prints their wall times; then the slowpath tax of what it ran. Quick:
    about 24 min per arch on 2 cores with --jobs 2; full: hours (the workflow runs it a job a
    profile and arch)."""
    args = session.posargs or ["--jobs", "2"]
    session.run("python", "benchmarks/agent_suite.py", "--tax", "results/agent-suite-tax.md", *args)


@nox.session(name="bench-build")
def bench_build(session):
    session.run("python", "benchmarks/build_cache.py", *session.posargs)
