"""A run's live progress: cell i/N, the guest's repeat k/R as it reports it, and an ETA.

The ETA covers the cells still to run (a cell that will be skipped for its ok record costs
nothing) and comes from earlier cells' wall times (`harness.eta`: this run's finished cells,
then the run directory's earlier records or the latest earlier run of the experiment); it says
where it came from. On a terminal a rich status line is redrawn; elsewhere (CI, logs) each event
is one line and a quiet cell gets one heartbeat line every `interval` seconds, never more, as
harness/kernel/progress.py does for builds.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.markup import escape

from harness import eta
from harness.guest.watch import GuestEvent


class RunProgress:
    def __init__(self, console: Console, total: int, todo: list[tuple[str, str]], known: dict[str, eta.Wall],
                 repeats: int, interval: float = 60.0):
        """todo: (cell, arch) of the cells that will run, in order; known: earlier wall times."""
        self.console = console
        self.total = total
        self.todo = list(todo)
        self.known = dict(known)
        self.repeats = repeats
        self.interval = interval
        self._lock = threading.Lock()
        self._status = None
        self._cell: str | None = None
        self._cell_t0 = 0.0
        self._repeats_done = 0
        self._last_line = 0.0

    # -- what the runner tells it -----------------------------------------------------------------
    def cell_start(self, i: int, cell: str) -> None:
        runs = any(c == cell for c, _ in self.todo)
        line = f"[{i}/{self.total}] {cell}"
        if runs:
            line += f"  (ETA {self.eta_text()})"
        with self._lock:
            self._cell, self._cell_t0, self._repeats_done = cell, time.monotonic(), 0
            self._print(line, bold_prefix=f"[{i}/{self.total}]")
            if runs and self.console.is_terminal and self._status is None:
                self._status = self.console.status(escape(self._text()))
                self._status.__enter__()

    def guest_event(self, ev: GuestEvent) -> None:
        with self._lock:
            at = eta.duration(time.monotonic() - self._cell_t0)
            if ev.kind == "workload-start":
                text = f"    workload started ({at} into the cell)"
            elif ev.kind == "repeat":
                self._repeats_done = max(self._repeats_done, ev.repeat + 1)
                text = f"    repeat {ev.repeat + 1}/{self.repeats} done, exit {ev.exit_code} ({at})"
            else:
                text = f"    probed run done, exit {ev.exit_code} ({at})"
            self._print(text)
            self._refresh()

    def tick(self) -> None:
        """Called while a guest runs: redraw (terminal) or a heartbeat line at most every interval."""
        with self._lock:
            if self._status is not None:
                self._refresh()
            elif self._cell is not None and time.monotonic() - self._last_line >= self.interval:
                self._print(f"    ... {self._text()}")

    def cell_done(self, cell: str, arch: str, wall_s: float | None) -> None:
        """wall_s: the ok record's cell_wall_s (None: failed or skipped, no use for estimates)."""
        with self._lock:
            self.todo = [(c, a) for c, a in self.todo if c != cell]
            if wall_s is not None:
                self.known[cell] = eta.Wall(arch, wall_s, "this run")
            self._cell = None
            self._end_status()

    def close(self) -> None:
        with self._lock:
            self._end_status()

    def _end_status(self) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None

    # -- text ---------------------------------------------------------------------------------------
    def eta_text(self) -> str:
        if not self.todo:
            return "nothing left to run"
        n = len(self.todo)
        return f"{n} cell{'s' * (n > 1)} to run: " + eta.describe(eta.estimate(self.todo, self.known))

    def _text(self) -> str:
        el = eta.duration(time.monotonic() - self._cell_t0)
        rep = (f"repeat {self._repeats_done + 1}/{self.repeats} running" if self._repeats_done < self.repeats
               else "repeats done")
        left = eta.estimate(self.todo, self.known)
        secs, unknown = eta.total(left)
        remaining = max(0.0, secs - (time.monotonic() - self._cell_t0)) if len(left) > unknown else None
        tail = f", run ETA {eta.duration(remaining)}" if remaining is not None else ""
        return f"{self._cell}: {el} in the cell, {rep}{tail}"

    def _refresh(self) -> None:
        if self._status is not None:
            self._status.update(escape(self._text()))

    def _print(self, text: str, bold_prefix: str = "") -> None:
        if bold_prefix and text.startswith(bold_prefix):
            self.console.print(f"[bold]{escape(bold_prefix)}[/]{escape(text[len(bold_prefix):])}", highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)
        self._last_line = time.monotonic()
