"""Where things live: the repository, the build cache and the results directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "kernel" / "configs"
PATCHES_DIR = REPO_ROOT / "kernel" / "patches"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


def cache_dir() -> Path:
    """The build cache: $HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/agent-latency, else ~/.cache/agent-latency.

    Kept outside the repository: kernels, trees and objects are tens of GB.
    """
    if env := os.environ.get("HARNESS_CACHE_DIR"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "agent-latency"


def results_dir() -> Path:
    """Where runs are written: $HARNESS_RESULTS_DIR, else results/ in the repository."""
    if env := os.environ.get("HARNESS_RESULTS_DIR"):
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "results"
