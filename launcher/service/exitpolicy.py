"""When the service gives up on the app, and the words it says then: the restart budget, the crash line, the
FATAL line, and the exit code for a signal. No processes here; the service loop asks and acts."""

from __future__ import annotations

import os
import re
import signal
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.config.settings import Settings

# supervisord's log line for an exit: "exited: app (exit status 3; not expected)" or "(terminated by SIGKILL; ...)"
EXITED = re.compile(r"exited: (?P<name>\S+) \((?P<how>[^;)]*)")
# A clean stop on a signal is success (Docker and Kubernetes see 0); a stop *before* the app ran is 128+N,
# what a shell reports for a command killed by that signal.
SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


def interrupted_code(signum: int) -> int:
    """128 + the signal's number: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + signum


class RestartBudget:
    """At most HEYGEM_MAX_RESTARTS restarts (crashes and incidents, not deliberate restarts) within
    HEYGEM_RESTART_WINDOW seconds."""

    def __init__(self, settings: Settings) -> None:
        self.times: deque[float] = deque()
        self.use(settings)

    def use(self, settings: Settings) -> None:
        self.max_restarts, self.window = settings.max_restarts, settings.restart_window

    def record(self, now: float) -> bool:
        """Count a restart at `now` (s since the epoch); True when that is one too many."""
        self.times.append(now)
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        return len(self.times) > self.max_restarts

    def __len__(self) -> int:
        return len(self.times)

    def crashed_too_often(self, last_exit: str, last_output: str) -> str:
        return (
            f"app restarted {len(self.times)} times in {self.window:.0f} s (HEYGEM_MAX_RESTARTS={self.max_restarts}); "
            f"last: {last_exit}; last output: {last_output}"
        )

    def exceeded(self, last: str) -> str:
        return (
            f"{len(self.times)} restarts in {self.window:.0f} s (HEYGEM_MAX_RESTARTS={self.max_restarts}): "
            f"giving up; last: {last}"
        )


class Backoff:
    """The wait before an app is started again: HEYGEM_RESTART_DELAY, doubled at each restart up to
    HEYGEM_RESTART_DELAY_MAX, back to the first delay once the app ran HEYGEM_RESTART_RESET seconds. Ours, not
    supervisord's: its BACKOFF counts only quick failures and forgets them at odd times (Supervisor/supervisor#487).
    Times are on the monotonic clock."""

    def __init__(self, settings: Settings) -> None:
        self.streak = 0  # restarts since the app last ran a healthy stretch
        self.running_since: float | None = None
        self.until: float | None = None  # when the waiting app may start; None: not waiting
        self.delay = 0.0  # the wait in force (shown by `status` and the metrics)
        self.use(settings)

    def use(self, settings: Settings) -> None:
        self.first, self.cap, self.reset = settings.restart_delay, settings.restart_delay_max, settings.restart_reset

    def started(self, now: float) -> None:
        self.running_since, self.until, self.delay = now, None, 0.0

    def wait(self, now: float) -> float:
        """A restart is due: begin its wait and return its length."""
        if self.running_since is not None and now - self.running_since >= self.reset:
            self.streak = 0
        self.running_since = None
        self.delay = min(self.first * 2**self.streak, max(self.cap, self.first)) if self.first > 0 else 0.0
        self.streak = min(self.streak + 1, 32)  # 2**32 s is past any cap: no float overflow however long it loops
        self.until = now + self.delay
        return self.delay

    def left(self, now: float) -> float:
        """Seconds until the waiting app may start; 0 when it may (or nothing waits)."""
        return 0.0 if self.until is None else max(0.0, self.until - now)


def exit_reason(log_how: str | None, info: Mapping[str, Any]) -> str:
    """How the app ended, always with its exit status or signal: supervisord's log line when it has one,
    else getProcessInfo's exitstatus (the description of a respawned app is its new uptime: useless)."""
    if log_how:
        return log_how.strip()
    return f"exit status {info.get('exitstatus', 0)}"


def reasons_from_log(lines: list[bytes]) -> dict[str, str]:
    """Each program's last exit in supervisord's log lines, in the order they were last seen."""
    found: dict[str, str] = {}
    for line in lines:
        match = EXITED.search(line.decode(errors="replace"))
        if match:
            found.pop(match.group("name"), None)
            found[match.group("name")] = match.group("how")
    return found


def fatal_line(settings: Settings, reason: str, last_output: str) -> str:
    """supervisord's FATAL: the first start and HEYGEM_START_RETRIES retries all failed quickly."""
    attempts = settings.start_retries + 1
    return (
        f"app gave up after {attempts} quick failure{'s' if attempts != 1 else ''} "
        f"(HEYGEM_START_RETRIES={settings.start_retries}): {reason}; last output: {last_output}"
    )


def last_output(app_log: Path, count: int = 5, window: int = 8192) -> str:
    """The app's last `count` output lines (from the last `window` bytes of its log), for a give-up line."""
    try:
        with open(app_log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - window))
            tail = handle.read(window).decode(errors="replace").splitlines()[-count:]
    except OSError:
        return "(none)"
    return " | ".join(line.strip()[:200] for line in tail if line.strip()) or "(none)"
