"""`heygem-launch replay`: the watchdog's rules over a recorded log, on the lines' own timestamps.

For operators tuning patterns on their own logs, and for the tests. The streams are merged the way they
arrive in the running service: HeyGem's log file (milliseconds) and its stderr (seconds, plus ONNX Runtime's
own lines) by time, the log file's copy of a second first, so each record counts once; `print()` output
has no time and Python 3.8 holds it until the app exits under a pipe, so it comes last. Between lines the
clock jumps to each due deadline; at the end of the files it runs on, so a task still open has hung.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from launcher import exitcodes
from launcher.config.settings import Settings
from launcher.errors import LaunchError
from launcher.system.follow import BUDGET, LineCutter
from launcher.system.special import unreadable
from launcher.watch.heygem_log import ort_line_time, parse_record
from launcher.watch.watchdog import Incident, Watchdog

LOG, OUTPUT = "log", "output"


@dataclass(frozen=True)
class Line:
    at: float | None
    source: str
    text: str


@dataclass
class ReplayResult:
    files: list[str]
    lines: int
    ready: bool
    ready_at: float | None
    missing_markers: list[str]
    dialect: str | None
    tasks: list[dict[str, Any]]
    incidents: list[Incident] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "ready": self.ready,
            "ready_at": _clock(self.ready_at),
            "missing_markers": self.missing_markers,
            "dialect": self.dialect,
            "tasks": self.tasks,
            "incidents": [{**i.as_dict(), "at": _clock(i.at)} for i in self.incidents],
        }


def _clock(at: float | None) -> str | None:
    """A time as the log writes it (local time, milliseconds)."""
    if at is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _recorded(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a recorded log: a regular file that reads like one. A FIFO, a device
    (/dev/zero), a folder or a /proc file would block or never end: LaunchError (64) naming it. OSError as open."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block the open
    why = None if stat.S_ISREG(os.fstat(fd).st_mode) else "not a regular file (a FIFO, a device or a folder)"
    why = why or unreadable(fd)
    if why is not None:
        os.close(fd)
        raise LaunchError(f"{path}: {why}: replay reads a recorded log", exit_code=exitcodes.USAGE)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_lines(handle: BinaryIO, end: int, source: str, line_max: int, timed: bool = True) -> Iterator[Line]:
    """The stream's lines up to byte `end` (its size when opened: a log still being written is replayed as it
    was), with their times, one at a time; a line without a time takes its predecessor's. Cut as the running
    service cuts them (`LineCutter`: at `line_max` bytes, marked, the rest dropped), read in pieces of
    `follow.BUDGET`: a replay holds a piece per stream whatever the files' length. Raises OSError."""
    last: float | None = None
    for raw in _cut_lines(handle, end, line_max):
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if timed:
            record = parse_record(text)
            at = record.at if record is not None else ort_line_time(text)
            last = at if at is not None else last
        yield Line(last, source, text)


def _cut_lines(handle: BinaryIO, end: int, line_max: int) -> Iterator[bytes]:
    lines, left = LineCutter(line_max), end
    while left > 0 and (data := handle.read(min(BUDGET, left))):
        left -= len(data)
        yield from lines.feed(data)
    yield from lines.flush()  # a last line without a newline, or one a truncation ended


def merge(log: Iterable[Line], stderr: Iterable[Line], stdout: Iterable[Line]) -> Iterator[Line]:
    """The order the running service would see them in: each stream in its own order (a wall clock that
    goes back, as at a DST change, reorders nothing), the two merged by second, the log file's line of a
    second first; the prints last. Lazy, as its streams."""
    # heapq.merge compares only the streams' next lines, and on a tie takes the earlier stream's: the log's.
    yield from heapq.merge(log, stderr, key=_second)
    yield from stdout


def _merged(files: list[tuple[BinaryIO, int] | None], line_max: int) -> Iterator[Line]:
    """The lines of the log, its stderr and its stdout (each a handle and the size to read, or None but the
    log), from their starts, merged lazily."""
    log, err, out = files
    assert log is not None
    for handle, _end in filter(None, files):
        handle.seek(0)
    return merge(
        read_lines(*log, LOG, line_max),
        read_lines(*err, OUTPUT, line_max) if err else iter(()),
        read_lines(*out, OUTPUT, line_max, timed=False) if out else iter(()),
    )


def _second(line: Line) -> float:
    return math.floor(line.at) if line.at is not None else -math.inf


def replay(settings: Settings, dh_log: Path, stderr: Path | None = None, stdout: Path | None = None) -> ReplayResult:
    """Run the rules over the recorded streams. Raises OSError when a file cannot be read. `dh_log` may also be
    a container's whole output (`docker logs`: HeyGem.ai's image, dialect B, writes no file of its own)."""
    guard = settings.require_provider != "CPUExecutionProvider"
    watchdog = Watchdog(settings, fallback_guard=guard, history=None)
    incidents: list[Incident] = []
    count = 0

    def run_until(until: float) -> None:
        nonlocal clock
        while (due := watchdog.next_deadline()) is not None and due <= until:
            clock = max(clock, due)
            incidents.extend(watchdog.check(clock))

    with contextlib.ExitStack() as files:  # all opened (and refused) before any line is read
        handles = [None if p is None else files.enter_context(_recorded(p)) for p in (dh_log, stderr, stdout)]
        sized = [None if h is None else (h, os.fstat(h.fileno()).st_size) for h in handles]
        # The clock starts at the first time any line carries (lines before it are fed at that time): found
        # by a first pass that stops there, so that no line is kept for a second.
        clock = next((line.at for line in _merged(sized, settings.line_max) if line.at is not None), 0.0)
        for line in _merged(sized, settings.line_max):
            count += 1
            if line.at is not None and line.at > clock:
                run_until(line.at)
                clock = line.at
            incidents.extend(watchdog.feed(line.text, clock, line.source))
    run_until(math.inf)  # the clock runs on after the last line
    watchdog.finish()
    return ReplayResult(
        files=[str(p) for p in (dh_log, stderr, stdout) if p is not None],
        lines=count,
        ready=watchdog.ready,
        ready_at=watchdog.ready_at,
        missing_markers=watchdog.missing_markers,
        dialect=watchdog.dialect,
        tasks=[
            {**t.as_dict(), "started_at": _clock(t.started_at), "ended_at": _clock(t.ended_at)}
            for t in watchdog.tasks()
        ],
        incidents=incidents,
    )


def render(result: ReplayResult) -> str:
    """The replay for a person: readiness, each task, each incident with what the service would do."""
    out = [f"replay of {' + '.join(result.files)}: {result.lines} lines, log dialect {result.dialect or '-'}"]
    if result.ready:
        out.append(f"ready: yes, at {_clock(result.ready_at)} (every worker marker logged)")
    else:
        out.append("ready: NO: never logged: " + "; ".join(result.missing_markers))
    out.append(f"tasks: {len(result.tasks) or 'none'}")
    for task in result.tasks:
        fps = f"{task['fps']:.2f} frames/s" if task["fps"] is not None else "- frames/s"
        out.append(f"  {task['code']}  {task['outcome']:<6} {task['frames']:>5} frames  {fps}")
    out.append(f"incidents: {len(result.incidents) or 'none'}")
    for incident in result.incidents:
        out.append(f"  {_clock(incident.at)}  {incident.kind:<12} -> {incident.action:<7} {incident.line[:160]}")
    return "\n".join(out)
