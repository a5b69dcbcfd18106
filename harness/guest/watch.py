"""What a running guest says about its progress, as it says it.

The guest script appends `key=value` lines to the status file in the share (protocol.Key); the
share is a 9p directory, so the host sees each line once the guest's `echo` returns. A thread
polls the file while the backend runs the guest and turns the keys that mark progress (the
workload started, repeat r ended, the probed run ended) into events, each reported once. The
file is read the way every share file is (share.py: no links, bounded); values the guest wrote
are reported only when they are exit codes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.guest import protocol

_EXIT = re.compile(r"-?[0-9]{1,5}")


@dataclass(frozen=True)
class GuestEvent:
    kind: Literal["workload-start", "repeat", "probed"]
    repeat: int | None = None     # 0-based, for kind "repeat"
    exit_code: int | None = None


class StatusWatch:
    """`with StatusWatch(share_dir, repeats, on_event):` around a guest run. `on_tick` is called
    at every poll (a progress display's heartbeat)."""

    def __init__(self, share_dir: Path, repeats: int, on_event: Callable[[GuestEvent], None],
                 on_tick: Callable[[], None] | None = None, poll_s: float = 1.0):
        self.share_dir = share_dir
        self.repeats = repeats
        self.on_event = on_event
        self.on_tick = on_tick
        self.poll_s = poll_s
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> list[GuestEvent]:
        """The events that appeared since the last poll, in the order the guest reaches them."""
        status = protocol.read_status(self.share_dir)
        wanted = [(protocol.Key.WORKLOAD_START, GuestEvent("workload-start"))]
        wanted += [(protocol.Key.repeat_exit(r), GuestEvent("repeat", r)) for r in range(self.repeats)]
        wanted.append((protocol.Key.PROBED_EXIT, GuestEvent("probed")))
        new = []
        for key, ev in wanted:
            if key in status and key not in self._seen:
                value = status[key]
                if ev.kind != "workload-start":
                    if not _EXIT.fullmatch(value):
                        continue     # half a line, or not an exit code: look again next time
                    ev = GuestEvent(ev.kind, ev.repeat, int(value))
                self._seen.add(key)
                new.append(ev)
        return new

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                for ev in self.poll():
                    self.on_event(ev)
                if self.on_tick is not None:
                    self.on_tick()
            except Exception:   # a display must never take the run down; the next poll tries again
                pass

    def __enter__(self) -> StatusWatch:
        self._thread = threading.Thread(target=self._loop, name="guest-status-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
