"""Guest stage: boot a built kernel under QEMU (virtme-ng) and run commands in it."""
