"""Pure: what the app's output and log say about it. Lines and times in, incidents out; no I/O, no clock.

HeyGem writes each log record to ./log/dh.log and to stderr, so the same line usually arrives twice (once
from the log, once from the app's output): a line that the other source gave in the last few seconds is
not counted again. The same source repeating a line is a new line.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from launcher.settings import Settings

QUEUE_BLOCKED = "queue_blocked"
TASK_FAILED = "task_failed"
STALL = "stall"
CPU_FALLBACK = "cpu_fallback"
RESTARTING = (QUEUE_BLOCKED, TASK_FAILED, STALL)  # known cure: restart the app

DUPLICATE_WINDOW = 5.0
LAST_LINES = 50


@dataclass(frozen=True)
class Incident:
    kind: str
    line: str
    at: float


def _frames(match: re.Match[str]) -> int:
    """The step's frames: the first number the progress pattern captured (1 when it captured none)."""
    for group in match.groups():
        if group is not None and group.lstrip("-").isdigit():
            return max(int(group), 0)
    return 1


class Watchdog:
    def __init__(self, settings: Settings, *, fallback_guard: bool) -> None:
        self.s = settings
        self.guard = fallback_guard
        self.lines: deque[str] = deque(maxlen=LAST_LINES)
        # Kept across resets: the second copy of the record that caused a restart may arrive after it.
        self._recent: dict[str, tuple[float, str]] = {}
        self.reset(0.0)

    def reset(self, now: float) -> None:
        """A new app process: nothing seen of it yet."""
        self.started_at = now
        self.fallback_guard = self.guard
        self.markers: set[str] = set()
        self.ready_at: float | None = None
        self.task_active = False
        self.last_progress_at: float | None = None
        self.last_progress_line = ""
        self.progress: deque[tuple[float, int]] = deque(maxlen=100)
        self.incident: Incident | None = None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    def _duplicate(self, line: str, now: float, source: str) -> bool:
        if len(self._recent) > 1000:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < DUPLICATE_WINDOW}
        seen = self._recent.pop(line, None)
        if seen is not None and seen[1] != source and now - seen[0] < DUPLICATE_WINDOW:
            return True  # the other copy of a record already counted; a third copy will count again
        self._recent[line] = (now, source)
        return False

    def feed(self, line: str, now: float, source: str = "log") -> Incident | None:
        """One line of the app's output ("output") or its log ("log"); an incident when it opens one."""
        if not line.strip() or self._duplicate(line, now, source):
            return None
        self.lines.append(line)
        s = self.s
        for marker in s.ready_markers:
            if marker in line:
                self.markers.add(marker)
        if self.ready_at is None and len(self.markers) == len(s.ready_markers):
            self.ready_at = now
        if self.fallback_guard and s.pattern_fallback.search(line):
            return self.open(CPU_FALLBACK, line, now)
        if s.pattern_blocked.search(line):
            return self.open(QUEUE_BLOCKED, line, now)
        if s.pattern_failure.search(line):
            return self.open(TASK_FAILED, line, now)
        if s.pattern_task_start.search(line):
            self.task_active, self.last_progress_at, self.last_progress_line = True, now, line
            self.progress.clear()
        match = s.pattern_progress.search(line)
        if match:
            self.task_active, self.last_progress_at, self.last_progress_line = True, now, line
            self.progress.append((now, _frames(match)))
        if s.pattern_task_end.search(line):
            self.task_active = False
        return None

    def check(self, now: float) -> Incident | None:
        """Time-driven incidents: a started task with no progress for HEYGEM_STALL_SECONDS."""
        deadline = self.stall_deadline()
        if deadline is not None and now >= deadline:
            return self.open(
                STALL,
                f"no progress for {now - (self.last_progress_at or now):.0f} s since: "
                f"{self.last_progress_line.strip()[:300]}",
                now,
            )
        return None

    def stall_deadline(self) -> float | None:
        if self.task_active and self.incident is None and self.last_progress_at is not None:
            return self.last_progress_at + self.s.stall_seconds
        return None

    def open(self, kind: str, line: str, now: float) -> Incident | None:
        """Open an incident, unless one is open already: its cure (restart or stop) is under way."""
        if self.incident is not None:
            return None
        self.incident = Incident(kind, line.strip(), now)
        self.task_active = False
        return self.incident

    def dismiss(self) -> None:
        """A CPU fallback the operator chose to tolerate (HEYGEM_ON_CPU_FALLBACK=warn): said once, then
        the guard stays off for this app process while the other patterns keep watching."""
        self.incident = None
        self.fallback_guard = False

    def frames_per_second(self) -> float | None:
        """The task's rate before it stopped: frames after the first step over the time they took."""
        if len(self.progress) < 2:
            return None
        span = self.progress[-1][0] - self.progress[0][0]
        frames = sum(f for _, f in list(self.progress)[1:])
        return round(frames / span, 3) if span > 0 else None
