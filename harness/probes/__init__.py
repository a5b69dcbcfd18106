"""Probe stage: bpftrace tools rendered from jinja2 templates, run in the guest next to the
loop, and parsed into typed records (one module per tool: template + parser + golden test)."""

from harness.probes.registry import PROBES, get, missing_symbols, outputs, render

__all__ = ["PROBES", "get", "missing_symbols", "outputs", "render"]
