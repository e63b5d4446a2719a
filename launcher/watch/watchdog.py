"""Pure: what the app's output and log say about it. Lines and times in, incidents out; no I/O, no clock.

The rules (README, "Watching the running service"), each matched against HeyGem's own records by level and
message, never against text a user controls (file names and task codes appear in INFO messages):

- the queue-full ERROR record -> `blocked`, restart;
- a task's frames make no progress for HEYGEM_STALL_SECONDS, or its final encode outlives its allowance
  -> `stall`, restart;
- one of HeyGem's failure ERROR records -> `task_failed`, recorded once per task, no restart (the task ends
  and the service stays healthy); if the task has not ended HEYGEM_STALL_SECONDS later it has hung -> `stall`;
- a sticky CUDA error (`STICKY_ERRORS`) in an error's own words: a line that an exception or ONNX Runtime's error
  log begins, or one of HeyGem's ERROR records -> `cuda_sticky`, restart at once (every later CUDA call of the
  process fails the same way, and its queue would block 60 s later);
- ONNX Runtime's own fallback lines (its C++ log, the Python layer's `EP Error` / `Falling back to`, the
  CPU wheel shadowing the GPU one) -> `cpu_fallback`, stop (or warn);
- HeyGem's own timeout (`任务执行失败…[no final result]`, and A's `_queue.Empty` shape `异常信息:[]`):
  its workers are gone or stuck and every later task would hang the same way -> `task_failed`, restart
  (recorded only before the app was ready: its workers were still loading);
- a task still preparing after HEYGEM_PREPARE_SECONDS, or (dialect B, which logs no frame progress) not ended
  HEYGEM_TASK_SECONDS + HEYGEM_TASK_SECONDS_PER_AUDIO_SECOND x its audio seconds after its `video_info`
  -> `stall`, restart;
- B's own watchdog line (`<code> ->av_transfer maybe blocked, restart...`: HeyGem restarts its workers)
  -> `blocked`, recorded; again within HEYGEM_WORKER_RESTART_WINDOW -> `blocked`, restart.

Both dialects are read per record, with one table each (dialects.py); readiness is the markers of the dialect
the app writes, since its last start.

One record, one event: HeyGem writes each record to its log file and to stderr; whichever copy arrives
first counts and the other copy of the same record (same second, file, line, level, message) is dropped
when it comes within DUPLICATE_SECONDS. Plain lines arrive once and always count.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from launcher.config.settings import Settings
from launcher.watch.dialects import Dialect, tables
from launcher.watch.heygem_log import Record, ort_line_time, parse_record, split_code, strip_colour
from launcher.watch.readiness import Readiness
from launcher.watch.tasks import ENCODE, FRAMES, PREPARE, TASK_HISTORY, Limits, Task, TaskLedger

BLOCKED = "blocked"
STALL = "stall"
TASK_FAILED = "task_failed"
CPU_FALLBACK = "cpu_fallback"
CUDA_STICKY = "cuda_sticky"  # a sticky CUDA error in the app's output: its CUDA context is poisoned
GPU_XID = "gpu_xid"  # an application XID on the app's GPU (NVML): the app restarts, the GPU is fine
GPU_FAULT = "gpu_fault"  # a reset/reboot-class XID, a lost GPU or NVML's Unknown Error: the app stops
RESTART, RECORD, STOP, WARN = "restart", "record", "stop", "warn"

# Sticky CUDA errors, which poison the process's CUDA context: torch raises `RuntimeError: CUDA error: <text>`
# (cuBLAS/cuDNN: `CUBLAS_STATUS_EXECUTION_FAILED`, `cuDNN error: CUDNN_STATUS_EXECUTION_FAILED`), ONNX Runtime logs
# `CUDA failure <code>: <text>` (cuda_call.cc). Codes: cudaErrorIllegalAddress 700, cudaErrorLaunchFailure 719,
# cudaErrorECCUncorrectable 214, cudaErrorAssert 710 (CUDA Runtime API, cudaError). Source: FIELD.md section 8.
STICKY_ERRORS = (
    r"CUDA error: (?:an illegal memory access was encountered|unspecified launch failure"
    r"|uncorrectable ECC error encountered|device-side assert triggered)",
    r"CUDA failure (?:700|719|214|710)\b",
    r"\bCUBLAS_STATUS_EXECUTION_FAILED\b",
    r"\bCUDNN_STATUS_EXECUTION_FAILED\b",
)
_STICKY = re.compile("|".join(STICKY_ERRORS))
# Where an error's own words are: a line an exception begins (`RuntimeError: …`, `onnxruntime…Fail: …`) or ONNX
# Runtime's error log (`… [E:onnxruntime:…`); never a print or a log line that may quote a user's file name.
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Fail)(?::|$)|\S+ \S+ \[[EF]:onnxruntime:)")

LAST_LINES = 50
SNAPSHOT_LINE = 2000  # characters of a line kept for a snapshot: an incident file stays well under 1 MB
REMEMBERED_RECORDS = 4096  # records whose other copy may still come; at 200 lines/s, 20 s of both streams
DUPLICATE_SECONDS = 60.0  # how long after its first copy the second copy of a record is still recognised
SAME_CLOCK = 300.0  # a record this close to `now` was stamped by the same clock: the instance fence applies


@dataclass(frozen=True)
class Incident:
    kind: str
    line: str
    at: float
    action: str
    code: str | None = None
    stamped: float | None = None  # the record's own time (its second's start when stamped without ms)

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "at": self.at, "line": self.line, "action": self.action, "code": self.code}


class Duplicates:
    """Counts each record's copies per stream; a copy beyond what the other stream delivered is new.

    Bounded in memory whatever the app writes: a record is remembered for DUPLICATE_SECONDS after its first
    copy (both copies are written at once; a pipe or a poll delays one by well under a second) and at most
    `capacity` of them, each as its key's 64-bit hash: among at most `capacity` records that are apart by
    less than DUPLICATE_SECONDS, two new ones colliding is a ~1e-12 chance. Python's own hash of the key tuple,
    not a digest of its repr: this runs on every line of a flood (a third of the watchdog's time per line)."""

    def __init__(self, key_length: int, capacity: int = REMEMBERED_RECORDS) -> None:
        self.key_length, self.capacity = key_length, capacity
        self.seen: OrderedDict[int, tuple[float, dict[str, int]]] = OrderedDict()

    def is_copy(self, record: Record, source: str, now: float) -> bool:
        key = hash(record.key(self.key_length))
        while self.seen and (
            len(self.seen) >= self.capacity or next(iter(self.seen.values()))[0] < now - DUPLICATE_SECONDS
        ):
            self.seen.popitem(last=False)
        first, counts = self.seen.get(key, (now, {}))
        self.seen[key] = (first, counts)
        mine = counts.get(source, 0)
        others = max((n for s, n in counts.items() if s != source), default=0)
        counts[source] = mine + 1
        return others > mine  # the other stream already delivered this copy


class Watchdog(TaskLedger):
    def __init__(
        self, settings: Settings, *, fallback_guard: bool, tz: str | None = None, history: int | None = TASK_HISTORY
    ) -> None:
        """`tz`: the app's TZ, in which its records are stamped (None: the launcher's own); `history`: how
        many finished tasks are kept (None: all, for a replay)."""
        self.s = settings
        self.tz = tz
        self.guard = fallback_guard
        super().__init__(history)
        self.limits = Limits.of(settings)
        self.dialects = tables(settings)
        self.readiness = Readiness(self.dialects)
        self.lines: deque[str] = deque(maxlen=LAST_LINES)
        # Kept across instances: a late copy of the record that caused a restart. A copy cut at HEYGEM_LINE_MAX
        # (bytes, after a prefix of up to ~100) keeps at least this many characters of its message.
        self.duplicates = Duplicates(max(1, (settings.line_max - 128) // 4))
        self.new_instance(None)

    def new_instance(self, started_at: float | None) -> None:
        """A new app process, started at `started_at` (epoch seconds, None when unknown): records stamped
        before it belong to the old one and are not held against it."""
        # Tasks of the old process: a blocked or failure line naming one of them, arriving late, is the old
        # process's too (the dying app may log its queue-full line once more), unless this one starts it anew.
        self.previous_codes = {t.code for t in self.open_tasks.values()} | {t.code for t in self.history if t.fired}
        self.finish()  # its process is gone
        self.fence = started_at
        self.readiness.restart()
        self.self_heals: deque[float] = deque(maxlen=2)
        self.fallback_guard = self.guard
        self.fallback_fired = False
        self.sticky_fired = False

    # -- readiness --------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.readiness.ready_at is not None

    @property
    def table(self) -> Dialect:
        return self.readiness.table

    @property
    def dialect(self) -> str | None:
        return self.readiness.dialect

    @property
    def ready_at(self) -> float | None:
        return self.readiness.ready_at

    @property
    def missing_markers(self) -> list[str]:
        return self.readiness.missing

    # -- lines in -----------------------------------------------------------------------------------------
    def feed(self, line: str, now: float, source: str = "log") -> list[Incident]:
        """One line of the app's output ("output") or its log file ("log"), arriving at `now`."""
        if not line.strip():
            return []
        record = parse_record(line, self.tz)
        if record is not None and self.duplicates.is_copy(record, source, now):
            return []
        self.lines.append(line[:SNAPSHOT_LINE])
        if record is None:
            return self._plain(strip_colour(line), now)
        stamped = record.at + (0.0 if record.precise else 1.0)
        if self._before_fence(stamped, now):
            return []
        return [replace(found, stamped=record.at) for found in self._record(record, line, now)]

    def before_fence(self, stamped: float, now: float) -> bool:
        """A record stamped at `stamped` is an older process's (the fence may have moved since it was read)."""
        return self._before_fence(stamped, now)

    def _before_fence(self, stamped: float | None, now: float) -> bool:
        return (
            self.fence is not None and stamped is not None and abs(stamped - now) < SAME_CLOCK and stamped <= self.fence
        )

    def _plain(self, line: str, now: float) -> list[Incident]:
        sticky = bool(_ERROR_LINE.match(line) and _STICKY.search(line))
        # Most lines match no rule: their stamp is read only for those that do (a hot path under a flood).
        if not sticky and not self.s.pattern_fallback.search(line):
            return []
        if self._before_fence(ort_line_time(line, self.tz), now):
            return []  # ONNX Runtime's line, stamped before this process started: the old one's
        evidence = line.strip()[:SNAPSHOT_LINE]
        return self.sticky(evidence, now) if sticky else self.cpu_fallback(evidence, now)

    def sticky(self, evidence: str, now: float) -> list[Incident]:
        """A sticky CUDA error: once per app process (every later call repeats it), restart."""
        fired, self.sticky_fired = self.sticky_fired, True
        return [] if fired else [Incident(CUDA_STICKY, evidence, now, RESTART)]

    def cpu_fallback(self, evidence: str, now: float) -> list[Incident]:
        """ONNX Runtime runs on the CPU (its own lines, or what /proc shows): once per app process."""
        if not self.fallback_guard or self.fallback_fired:
            return []
        self.fallback_fired = True
        action = WARN if self.s.on_cpu_fallback == "warn" else STOP
        if action == WARN:
            self.fallback_guard = False  # said once; the other rules keep watching
        return [Incident(CPU_FALLBACK, evidence, now, action)]

    def _record(self, record: Record, line: str, now: float) -> list[Incident]:
        d = self.dialects[record.dialect]
        self.readiness.see(record, now)
        # The caller's task code (spaces, brackets, failure words) is taken out before any rule sees the text.
        code, message = split_code(record.message, [*self.open_tasks, *self.previous_codes], record.dialect)
        text = line.strip()[:SNAPSHOT_LINE]
        if record.level == "ERROR" and code in self.previous_codes and code not in self.open_tasks:
            return []  # about a task of the process that was replaced
        if record.level == "ERROR":
            if _STICKY.search(message):
                return self.sticky(text, now)
            if d.blocked.search(message):
                return self._open(self.find(code, now), BLOCKED, text, now, RESTART)
            if d.failure.search(message) or d.wedged.search(message):
                task = self.find(code, now)
                if task is not None:
                    task.failed(text, now)
                # HeyGem's own timeout: its workers are gone; before readiness they were still loading.
                wedged = d.wedged.search(message) is not None and self.ready
                return self._open(task, TASK_FAILED, text, now, RESTART if wedged else RECORD)
        if record.level == "WARNING" and d.self_heal.search(message):
            return self._self_heal(self.find(code, now), text, now)
        self._progress(d, code, message, now)
        return []

    def _progress(self, d: Dialect, code: str | None, message: str, now: float) -> None:
        """A task's life: start, length (B), frames, end."""
        if d.task_start.search(message):
            code = code or f"#{len(self.history) + len(self.open_tasks) + 1}"
            self.open_tasks.pop(code, None)  # a code used again is a new task
            self.open_tasks[code] = Task(code, now)
        elif match := d.task_info.search(message):
            if task := self.find(code, now):
                task.measured(float(match.group(1)), now)
        elif d.frames_start.search(message):
            if task := self.find(code, now):
                task.frames_start(now)
        elif match := d.frames.search(message):
            digits = next((g for g in match.groups() if g and g.isascii() and g.isdigit()), None)
            if task := self.find(code, now, running=(FRAMES,)):
                task.frames_done_by_consumer(int(digits) if digits else 1, now)
        elif d.progress.search(message):
            if task := self.find(code, now, running=(FRAMES, PREPARE)):
                task.produced(now)
        elif d.frames_done.search(message):
            if task := self.find(code, now, running=(FRAMES, ENCODE)):
                task.frames_finished(now)
        elif d.task_end.search(message) and (task := self.find(code, now)):
            task.end(now)
            self.close(task)

    def _self_heal(self, task: Task | None, line: str, now: float) -> list[Incident]:
        """HeyGem restarted its own workers: recorded; a second time within HEYGEM_WORKER_RESTART_WINDOW it
        is not healing (#481: the task never recovered), so restart."""
        again = bool(self.self_heals) and now - self.self_heals[-1] <= self.s.worker_restart_window
        self.self_heals.append(now)
        if not again:
            return self._open(task, BLOCKED, line, now, RECORD)
        if task is not None:
            if task.restarted:
                return []
            task.fired.discard(BLOCKED)
        return self._open(task, BLOCKED, line, now, RESTART)

    def _open(self, task: Task | None, kind: str, line: str, now: float, action: str) -> list[Incident]:
        """One incident per task and kind; a task whose cure is a restart gets no time rule any more."""
        if task is not None:
            if kind in task.fired:
                return []
            task.fired.add(kind)
            if action == RESTART:
                task.restarted = True
                task.hang()
        return [Incident(kind, line, now, action, task.code if task else None)]

    # -- time ---------------------------------------------------------------------------------------------
    def check(self, now: float) -> list[Incident]:
        """Time-driven incidents: overdue tasks."""
        found: list[Incident] = []
        for task in list(self.open_tasks.values()):
            due = task.deadline(self.limits)
            if due is not None and now >= due[0]:
                found += self._open(
                    task, STALL, f"{due[1]}: nothing for {now - task.last_activity_at:.0f} s", now, RESTART
                )
        return found

    def next_deadline(self) -> float | None:
        deadlines = [d[0] for t in self.open_tasks.values() if (d := t.deadline(self.limits)) is not None]
        return min(deadlines, default=None)
