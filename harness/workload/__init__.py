"""Workload stage: the agent-loop program, built static per arch, and the guest script that runs it."""
