"""Agent latency harness: experiment spec -> kernel build -> guest -> workload -> probes -> analysis."""

__version__ = "0.1.0"
