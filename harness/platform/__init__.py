"""Physical CPU platforms: the energy model the simulated platform meters, presets of real SoCs read
from the kernel source tree, and the frontier bound (the least energy a step can cost)."""
