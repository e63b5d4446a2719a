"""The watchdog's eyes in the running service: the app's output and log, its processes in /proc.

`AppWatch` reads (and copies the app's output to stdout), feeds the pure `Watchdog`, checks that the app
holds a CUDA context after the grace, and writes the snapshot of an incident. What to do about an incident
(restart, stop) is the service's decision.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, BinaryIO

from inotify_simple import INotify, flags

from launcher import incident, procs
from launcher.follow import Follower
from launcher.rundir import RunDir
from launcher.settings import Settings
from launcher.watchdog import CPU_FALLBACK, Incident, Watchdog

WATCH = flags.MODIFY | flags.CREATE | flags.MOVED_TO
CPU = "CPUExecutionProvider"


class AppWatch:
    def __init__(self, settings: Settings, run: RunDir, out: BinaryIO) -> None:
        self.run, self.out = run, out
        self.output = Follower(run.app_log)  # what supervisord captured of the app's stdout and stderr
        self.open_incident: dict[str, Any] | None = None  # from the trigger until the new app is ready
        self.last_incident: dict[str, Any] | None = None
        self.use(settings)

    def use(self, settings: Settings) -> None:
        """(New) settings: patterns, markers, the log's path. Nothing seen so far carries over."""
        self.settings = settings
        self.guard = settings.require_provider != CPU  # the runtime CPU-fallback guard
        self.watchdog = Watchdog(settings, fallback_guard=self.guard)
        # HeyGem's own log; lines already in it belong to an earlier run.
        self.log = Follower(settings.app_log, from_end=settings.app_log.exists())
        self.log_watched = False  # inotify on its folder, once that exists
        self.gpu_checked = False
        self.saved_ready = False

    def watch_folders(self, changes: INotify) -> None:
        changes.add_watch(str(self.run.path), WATCH)
        self.watch_log_folder(changes)

    def watch_log_folder(self, changes: INotify) -> None:
        """inotify on the app log's folder once it exists (HeyGem creates ./log at start)."""
        if not self.log_watched:
            try:
                changes.add_watch(str(self.settings.app_log.parent), WATCH)
            except OSError:
                return
            self.log_watched = True

    def copy_output(self, final: bool = False) -> list[bytes]:
        lines = self.output.read() + (self.output.flush() if final else [])
        if lines:
            self.out.write(b"\n".join(lines) + b"\n")
            self.out.flush()
        return lines

    def read(self) -> Incident | None:
        """Copy the app's output to stdout; feed it and HeyGem's log to the watchdog."""
        now = time.time()
        found = None
        for source, lines in (("output", self.copy_output()), ("log", self.log.read())):
            for raw in lines:
                incident_found = self.watchdog.feed(raw.decode("utf-8", errors="replace"), now, source)
                found = found or incident_found
        return found

    def deadlines(self) -> list[float]:
        """When the next time-driven check is due: a stall, the GPU grace."""
        return [d for d in (self.watchdog.stall_deadline(), self.gpu_deadline()) if d is not None]

    def check(self, now: float, group: int | None) -> Incident | None:
        return self.watchdog.check(now) or self.check_gpu_context(now, group)

    def gpu_deadline(self) -> float | None:
        ready_at = self.watchdog.ready_at
        if not self.guard or self.gpu_checked or ready_at is None or self.watchdog.incident:
            return None
        return ready_at + self.settings.gpu_grace

    def check_gpu_context(self, now: float, group: int | None) -> Incident | None:
        """HEYGEM_GPU_GRACE s after the app is ready, one of its processes must talk to the GPU driver."""
        deadline = self.gpu_deadline()
        if deadline is None or now < deadline or group is None:
            return None
        self.gpu_checked = True
        uses = [procs.gpu_use(p.pid) for p in procs.group_members(group)]
        if any(use and use.cuda_context for use in uses):
            return None
        return self.watchdog.open(
            CPU_FALLBACK,
            f"no process of the app holds a CUDA context {self.settings.gpu_grace:.0f} s after it was ready "
            "(libcuda.so not mapped, no /dev/nvidia* open)",
            now,
        )

    def new_instance(self) -> None:
        """A new app process is coming: nothing seen of the old one applies to it."""
        self.watchdog.reset(time.time())
        self.gpu_checked = False

    def readiness_changed(self) -> bool:
        """True once when the app has become ready (which closes the open incident) or stopped being so."""
        if self.watchdog.ready == self.saved_ready:
            return False
        self.saved_ready = self.watchdog.ready
        if self.saved_ready:
            self.open_incident = None
        return True

    def record(self, found: Incident, group: int | None) -> tuple[str, Path]:
        """Write the incident's snapshot; its one summary line for the log, and the file."""
        app = procs.first_child(group) if group else None
        data = incident.snapshot(found, self.watchdog, group, app, self.settings.stall_seconds)
        path = incident.write(self.run, found, data)
        self.last_incident = {"kind": found.kind, "line": found.line, "at": found.at, "snapshot": str(path)}
        return incident.summary(found, data, path), path

    def tolerate_fallback(self) -> None:
        """HEYGEM_ON_CPU_FALLBACK=warn: the incident is not kept open."""
        self.watchdog.dismiss()

    def keep_open(self) -> None:
        self.open_incident = self.last_incident

    def state(self) -> dict[str, Any]:
        return {
            "ready": self.watchdog.ready,
            "ready_at": self.watchdog.ready_at,
            "incident": self.open_incident,
            "last_incident": self.last_incident,
        }
