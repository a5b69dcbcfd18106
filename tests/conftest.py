import os
import subprocess
from pathlib import Path

import pytest

from harness import paths


@pytest.fixture
def repo_root() -> Path:
    return paths.REPO_ROOT


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache dir, so a test can show that nothing was built or unpacked."""
    d = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def agentloop(tmp_path_factory) -> Path:
    """The agent loop built for the host, warnings as errors."""
    out = tmp_path_factory.mktemp("bin") / "agentloop"
    src = paths.REPO_ROOT / "harness" / "workload" / "agentloop.c"
    subprocess.run(["gcc", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src), "-lm"],
                   check=True)
    return out


def pytest_collection_modifyitems(config, items):
    # HARNESS_SKIP_KERNEL=1 runs only the fast tests (for quick local iterations).
    if os.environ.get("HARNESS_SKIP_KERNEL") == "1":
        skip = pytest.mark.skip(reason="HARNESS_SKIP_KERNEL=1")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)
