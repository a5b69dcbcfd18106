"""Experiment spec: load a YAML file, validate it, expand it into cells."""

from harness.spec.loader import Cell, LoadedExperiment, load_experiment
from harness.spec.model import CellSpec, Experiment, KernelSpec

__all__ = ["Cell", "CellSpec", "Experiment", "KernelSpec", "LoadedExperiment", "load_experiment"]
