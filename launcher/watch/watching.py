"""The watchdog's eyes in the running service: the app's output and log, its processes in /proc.

`AppWatch` reads (and copies the app's output to stdout), feeds the pure `Watchdog`, checks after the grace
that every process of the app that loaded ONNX Runtime also loaded its CUDA provider, and writes the
snapshot of an incident. What to do about an incident (restart, stop) is the service's decision.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from inotify_simple import INotify, flags

from launcher.config.settings import Settings
from launcher.system import procs
from launcher.system.follow import Follower
from launcher.system.outlet import Outlet
from launcher.system.rundir import RunDir
from launcher.watch import incident
from launcher.watch.sessions import Session, SessionEvidence, cpu_fallback
from launcher.watch.tasks import Task
from launcher.watch.watchdog import Incident, Watchdog

WATCH = flags.MODIFY | flags.CREATE | flags.MOVED_TO
CPU = "CPUExecutionProvider"


class AppWatch:
    def __init__(
        self,
        settings: Settings,
        run: RunDir,
        out: Outlet,
        *,
        program: str = "app",
        own_log: bool = True,
        prefix: bytes = b"",
    ) -> None:
        """`program`: the supervisord program whose output is watched. `own_log`: follow HeyGem's own log
        file too; not when several apps share one app dir, and so one log (every record also reaches the
        app's stderr, FIELD.md section 2). `prefix`: put before each line copied to stdout."""
        self.run, self.out, self.program, self.own_log, self.prefix = run, out, program, own_log, prefix
        # What supervisord captured of the app's stdout and stderr. The run dir outlives the container's
        # restarts: what the file holds now is an earlier run's.
        self.output = Follower(run.program_log(program), from_end=True, line_max=settings.line_max)
        self.log: Follower | None = None
        self.watchdog: Watchdog | None = None
        self.open_incident: dict[str, Any] | None = None  # from the trigger until the new app is ready
        self.last_incident: dict[str, Any] | None = None
        self.read_any = False  # the last read found lines
        self.sessions = SessionEvidence()  # the audit's records, and ORT's fallback line waiting for one
        self.use(settings)

    def use(self, settings: Settings) -> None:
        """(New) settings: rules, markers, the log's path. Only the memory of records already counted
        carries over, so that a late copy of one is still recognised."""
        self.settings = settings
        self.guard = settings.require_provider != CPU  # the runtime CPU-fallback guard
        old = self.watchdog
        self.watchdog = Watchdog(settings, fallback_guard=self.guard)
        if old is not None:
            self.watchdog.duplicates = old.duplicates
        self.output.line_max = settings.line_max
        if self.log is not None:
            self.log.close()
        # HeyGem's own log; lines already in it belong to an earlier run (the repo even ships old ones).
        self.log = Follower(settings.app_log, from_end=True, line_max=settings.line_max) if self.own_log else None
        self.log_watched = not self.own_log  # inotify on its folder, once that exists
        self.grace = GraceRule()
        self.saved_ready = False
        self.saved_missing: tuple[str, ...] = ()
        self.saved_tasks: list[tuple[str, str, str | None]] = []

    def close(self) -> None:
        self.output.close()
        if self.log is not None:
            self.log.close()

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
            shown = [self.prefix + line for line in lines] if self.prefix else lines
            self.out.write(b"\n".join(shown) + b"\n", len(shown))  # queued: a stalled reader drops, never blocks
        return lines

    @property
    def more(self) -> bool:
        """A follower stopped at its budget: read again at once."""
        return self.output.more or (self.log is not None and self.log.more)

    def read(self) -> list[Incident]:
        """Copy the app's output to stdout; feed it and HeyGem's log to the watchdog."""
        assert self.watchdog is not None
        now = time.time()
        found: list[Incident] = []
        self.read_any = False
        for source, lines in (("output", self.copy_output()), ("log", self.log.read() if self.log else [])):
            self.read_any = self.read_any or bool(lines)
            for raw in lines:
                found += self.watchdog.feed(raw.decode("utf-8", errors="replace"), now, source)
        return self.sessions.hold(found, now) if self.settings.session_audit else found

    def session(self, record: Session) -> list[Incident]:
        """One session the app created (the audit's record): kept for status and metrics; one without CUDA
        where CUDA is required is the incident, at once (ONNX Runtime's own word: no grace)."""
        assert self.watchdog is not None
        evidence = cpu_fallback(record, self.settings.require_provider) if self.guard else None
        return self.sessions.add(record, evidence, self.watchdog.cpu_fallback)

    def deadlines(self) -> list[float]:
        """When the next time-driven check is due: an overdue task, the ONNX Runtime guard."""
        assert self.watchdog is not None
        grace = self.grace.deadline(self.watchdog, self.settings.gpu_grace, self.guard)
        due = (self.watchdog.next_deadline(), grace, self.sessions.deadline)
        return [d for d in due if d is not None]

    def check(self, now: float, group: int | None) -> list[Incident]:
        assert self.watchdog is not None
        proc_sign = self.grace.check(self.watchdog, self.settings.gpu_grace, self.guard, now, group)
        return self.sessions.release(now) + self.watchdog.check(now) + proc_sign

    def new_instance(self, fence: float | None = None) -> None:
        """A new app process is coming: nothing seen of the old one applies to it, and records stamped
        before `fence` (default: now) are the old one's."""
        assert self.watchdog is not None
        self.watchdog.new_instance(time.time() if fence is None else fence)
        self.grace = GraceRule()
        self.sessions.clear()

    def stale(self, found: Incident) -> bool:
        """The incident's record is stamped before the current app process started: the old one's, whenever
        it was read (the fence moves when the new process is seen, which may be after the record was fed).
        A stamp without milliseconds counts from its second's start: a new process logs no incident in the
        second it starts (its workers load their models first), and the stderr copy may be read first."""
        assert self.watchdog is not None
        return found.stamped is not None and self.watchdog.before_fence(found.stamped, time.time())

    def started(self, start: float) -> None:
        """The new app process started at `start` (epoch seconds, from /proc): anything stamped before it is
        an older process's, however late it arrives."""
        assert self.watchdog is not None
        self.watchdog.fence = max(self.watchdog.fence or 0.0, start)

    @property
    def ready(self) -> bool:
        """Both workers logged their markers and the port answers (the watchdog's own judgement)."""
        assert self.watchdog is not None
        return self.watchdog.ready

    @property
    def ready_markers(self) -> tuple[str, ...]:
        """The markers of the log dialect the app writes."""
        assert self.watchdog is not None
        return self.watchdog.table.ready_markers

    def readiness_changed(self) -> bool:
        """True once when the app has become ready (which closes the open incident) or stopped being so, or
        when what it still lacks changed (a marker came; the app turned out to write the other log dialect)."""
        assert self.watchdog is not None
        missing = tuple(self.watchdog.missing_markers)
        if self.watchdog.ready == self.saved_ready and missing == self.saved_missing:
            return False
        self.saved_ready, self.saved_missing = self.watchdog.ready, missing
        if self.saved_ready:
            self.open_incident = None
        return True

    def tasks_changed(self) -> bool:
        """True once after a task started, changed phase or ended: the state file shows tasks."""
        assert self.watchdog is not None
        signature = [(t.code, t.phase, t.outcome) for t in self.watchdog.tasks()[-10:]]
        if signature == self.saved_tasks:
            return False
        self.saved_tasks = signature
        return True

    def take_finished(self) -> list[Task]:
        """Tasks that ended since the last call (for the metrics)."""
        assert self.watchdog is not None
        return self.watchdog.take_finished()

    def record(self, found: Incident, group: int | None) -> tuple[str, Path]:
        """Write the incident's snapshot; its one summary line for the log, and the file."""
        assert self.watchdog is not None
        app = procs.first_child(group) if group else None
        data = {
            **incident.snapshot(found, self.watchdog, group, app),
            "program": self.program,
            "sessions": self.sessions.book.as_list(),
        }
        path = incident.write(self.run, found, data, self.program)
        self.last_incident = {**found.as_dict(), "snapshot": str(path)}
        return incident.summary(found, data, path), path

    def keep_open(self) -> None:
        self.open_incident = self.last_incident

    def state(self) -> dict[str, Any]:
        assert self.watchdog is not None
        dog = self.watchdog
        return {
            "ready": dog.ready,
            "ready_at": dog.ready_at,
            "missing_markers": dog.missing_markers,
            # Which of HeyGem's dialects the app writes, and so how `probe ready` asks its port.
            "dialect": dog.dialect,
            "api": list(dog.table.api),
            "incident": self.open_incident,
            "last_incident": self.last_incident,
            "tasks": [t.as_dict() for t in dog.tasks()[-10:]],
            "sessions": self.sessions.book.as_list(),
        }


class GraceRule:
    """HEYGEM_GPU_GRACE s after the app is ready (its models are loaded), each of its processes that maps ONNX
    Runtime must map ONNX Runtime's CUDA provider too: checked once per app process, from /proc (a sign)."""

    def __init__(self) -> None:
        self.checked = False

    def deadline(self, dog: Watchdog, grace: float, guard: bool) -> float | None:
        """When to look (epoch seconds); None when there is nothing to look for."""
        if not guard or self.checked or dog.ready_at is None or dog.fallback_fired:
            return None
        return dog.ready_at + grace

    def check(self, dog: Watchdog, grace: float, guard: bool, now: float, group: int | None) -> list[Incident]:
        deadline = self.deadline(dog, grace, guard)
        if deadline is None or now < deadline or group is None:
            return []
        self.checked = True
        evidence = ort_on_cpu(group, grace)
        return [] if evidence is None else dog.cpu_fallback(evidence, now)


def ort_on_cpu(group: int, grace: float) -> str | None:
    """The /proc sign (not proof: the provider library also maps when CUDA then fails to initialise) that
    ONNX Runtime runs on the CPU: processes of the app's group that map ONNX Runtime but not its CUDA provider
    `grace` seconds after the app was ready; None when there are none."""
    uses = [procs.ort_use(p.pid) for p in procs.group_members(group)]
    on_cpu = [u.pid for u in uses if u is not None and u.on_cpu]
    if not on_cpu:
        return None
    named = ", ".join(f"{pid} ({procs.command_line(pid)[:80]})" for pid in on_cpu)
    return (
        f"ONNX Runtime runs on the CPU: {len(on_cpu)} process(es) of the app map ONNX Runtime but not "
        f"libonnxruntime_providers_cuda.so {grace:.0f} s after it was ready: pid {named}"
    )
