"""A live view of a long step (a kernel build: stage, objects compiled, elapsed time).

make's terse output (`  CC      kernel/fork.o`) is parsed line by line. On a terminal a rich
status line is redrawn; elsewhere (CI, logs) one line is printed every `interval` seconds,
so a 20-minute build is never a silent wait.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from rich.console import Console
from rich.markup import escape

_COMPILE = {"CC", "AS", "CPP", "HOSTCC", "HOSTLD", "AR", "LDS", "CC [M]", "UPD", "GEN", "SYSHDR", "SYSTBL",
            "WRAP", "CHKSHA1", "MKELF", "POLICY", "VDSO", "VDSO2C", "OBJCOPY"}
# (tag, target prefix) -> stage; the first match wins. Targets are paths relative to O=.
_STAGES = ((("LD", "vmlinux"), "link"), (("BTF", ""), "BTF"), (("KSYMS", ""), "kallsyms"),
           (("SORTTAB", ""), "link"), (("SYSMAP", ""), "link"), (("", "arch/x86/boot/"), "image"),
           (("", "arch/arm64/boot/"), "image"))


class LiveProgress(AbstractContextManager):
    """A long step's one-line status: redrawn on a terminal; elsewhere a line at each forced refresh
    (a stage change) and at most one more every `interval` seconds. Subclasses say what `_text` is."""

    kind = "build"

    def __init__(self, label: str, console: Console | None = None, interval: float = 60.0):
        self.label = label
        self.console = console or Console(stderr=True)
        self.interval = interval
        self.start = time.monotonic()
        self._last_print = self.start
        self._status = None

    def __enter__(self):
        if self.console.is_terminal:
            self._status = self.console.status(escape(self._text()))
            self._status.__enter__()
        else:
            self.console.print(f"[{self.kind} {self.label}] started", markup=False, highlight=False)
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def _elapsed(self) -> str:
        mins, secs = divmod(int(time.monotonic() - self.start), 60)
        return f"{mins}m{secs:02d}s"

    def _text(self) -> str:
        raise NotImplementedError

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._status is not None:
            self._status.update(escape(self._text()))
        elif force or now - self._last_print >= self.interval:
            self.console.print(self._text(), markup=False, highlight=False)
            self._last_print = now


class BuildProgress(LiveProgress):
    def __init__(self, label: str, expected_objects: int | None = None, console: Console | None = None,
                 interval: float = 60.0):
        super().__init__(label, console, interval)
        self.expected = expected_objects
        self.stage = "configure"
        self.objects = 0

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self._refresh(force=not self.console.is_terminal)

    def feed(self, line: str) -> None:
        """One line of make output."""
        parts = line.split(None, 1)
        tag, target = (parts[0], parts[1].strip()) if len(parts) == 2 and line.startswith("  ") else ("", "")
        if tag in _COMPILE:
            self.objects += 1
            if self.stage == "configure":
                self.stage = "compile"
        for (want_tag, prefix), stage in _STAGES:
            if (not want_tag or tag == want_tag) and tag and target.startswith(prefix):
                self.stage = stage
                break
        if line.startswith("Kernel: "):
            self.stage = "done"
        self._refresh()

    def _text(self) -> str:
        count = f"{self.objects}" + (f"/~{self.expected}" if self.expected else "")
        return f"[build {self.label}] {self.stage}: {count} steps, {self._elapsed()}"
