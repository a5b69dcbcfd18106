"""Remote targets: machines the harness reaches over SSH instead of booting (real hardware, a
board farm, or the QEMU test box that stands in for one in the tests)."""
