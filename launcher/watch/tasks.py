"""Pure: one HeyGem task as its log records tell it, phase by phase, and when it is overdue.

A task, from HeyGem's source and real log (FIELD.md section 2): the start line `任务:c -> audio_url:…`, a
preparation phase (ffmpeg, audio features, init_wh: no time rule, it may take long), the frame loop from
`[c]任务视频驱动队列启动` (producer lines `drivered_video … 发送数据大小`, consumer lines `audio_transfer …
发送完成数据大小:4, frameId:K`, one per 4 frames done: frames are counted from these only), the end of the
frames (`[c]任务数字人图片处理已完成`, the writer's `视频帧队列处理已结束`, `Custom command:ffmpeg …`), a final
encode with no line at all (19 s for 150 frames, 95 s for 1,500), and `>>> 任务:c 耗时:T` in a `finally`:
the end of every task, successful or not, unless it hangs.

Dialect B (HeyGem.ai's image, FIELD-heygem-ai.md section 7) logs the start `<c> ->audio_url:…`,
`<c> -> video_info:[…], audio_info:[secs]`, then nothing of its own until `<c> -> 耗时:…s` or a failure: from
`video_info` the task has one allowance, grown with its audio's length (phase WORK).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from launcher.config.settings import Settings

PREPARE, FRAMES, ENCODE, WORK, ENDED = "prepare", "frames", "encode", "work", "ended"
DONE, FAILED, HUNG = "done", "failed", "hung"
TASK_HISTORY = 100


@dataclass(frozen=True)
class Limits:
    """The time rules, in seconds (HEYGEM_STALL_SECONDS, HEYGEM_ENCODE_SECONDS[_PER_FRAME],
    HEYGEM_PREPARE_SECONDS, HEYGEM_TASK_SECONDS[_PER_AUDIO_SECOND])."""

    stall: float
    encode: float
    encode_per_frame: float
    prepare: float = 300.0
    task: float = 120.0
    task_per_audio_second: float = 10.0

    @classmethod
    def of(cls, s: Settings) -> Limits:
        return cls(
            s.stall_seconds,
            s.encode_seconds,
            s.encode_seconds_per_frame,
            s.prepare_seconds,
            s.task_seconds,
            s.task_seconds_per_audio_second,
        )

    def task_allowance(self, audio_seconds: float) -> float:
        """How long a B task may run from its `video_info` without ending: 120 s + 10 s per audio second
        by default (215 s for 9.5 s of audio, which took 45 s; HeyGem's own timeout says 600 s)."""
        return self.task + self.task_per_audio_second * audio_seconds

    def encode_allowance(self, frames: int) -> float:
        """How long the final encode may run without a line: grows with the task's frames, never under the
        stall time. Defaults: 60 s + 0.25 s a frame (97 s for 150 frames, 435 s for 1,500)."""
        return max(self.stall, self.encode + self.encode_per_frame * frames)


@dataclass
class Task:
    code: str
    started_at: float
    phase: str = PREPARE
    last_activity_at: float = 0.0
    frames: int = 0
    frames_started_at: float | None = None
    first_batch: tuple[float, int] | None = None  # (time, frames) of the first consumer line
    last_frames_at: float | None = None
    audio_seconds: float | None = None  # B: the task's length, from its video_info line
    failed_at: float | None = None
    failure: str | None = None
    ended_at: float | None = None
    outcome: str | None = None  # done, failed, hung; None while it runs
    fired: set[str] = field(default_factory=set)  # incident kinds already opened for this task
    restarted: bool = False  # an incident whose cure is a restart fired: the service killed it

    def __post_init__(self) -> None:
        self.last_activity_at = self.started_at

    # -- what the records say ---------------------------------------------------------------------------
    def frames_start(self, now: float) -> None:
        self.phase, self.frames_started_at, self.last_activity_at = FRAMES, now, now

    def produced(self, now: float) -> None:
        if self.phase in (PREPARE, FRAMES):
            self.phase, self.last_activity_at = FRAMES, now

    def frames_done_by_consumer(self, count: int, now: float) -> None:
        self.produced(now)
        self.frames += count
        if self.first_batch is None:
            self.first_batch = (now, count)
        self.last_frames_at = now

    def frames_finished(self, now: float) -> None:
        """The frames are done; the final encode runs (each of its lines restarts its allowance)."""
        if self.phase != ENDED:
            self.phase, self.last_activity_at = ENCODE, now

    def measured(self, audio_seconds: float, now: float) -> None:
        """B's `video_info`: the task's length is known; its allowance runs from here."""
        if self.phase == PREPARE:
            self.phase, self.audio_seconds, self.last_activity_at = WORK, audio_seconds, now

    def failed(self, line: str, now: float) -> None:
        if self.failed_at is None:
            self.failed_at, self.failure = now, line
        if self.outcome == HUNG:  # restarted, then HeyGem's own failure line said how it ended
            self.outcome = FAILED

    def end(self, now: float) -> None:
        self.phase, self.ended_at = ENDED, now
        if self.outcome is None:
            self.outcome = FAILED if self.failed_at is not None else DONE

    def hang(self) -> None:
        """It never ended: `failed` if a failure line came (a task HeyGem gave up on), else `hung`."""
        if self.outcome is None:
            self.outcome = FAILED if self.failed_at is not None else HUNG

    # -- derived -----------------------------------------------------------------------------------------
    @property
    def fps(self) -> float | None:
        """Frames per second of the frame loop, from the consumer lines after the first (which carries the
        models' warm-up): the rate a person compares with the GPU baseline (~8.7 frames/s)."""
        if self.first_batch is None or self.last_frames_at is None:
            return None
        span = self.last_frames_at - self.first_batch[0]
        if span <= 0:
            return None
        return round((self.frames - self.first_batch[1]) / span, 3)

    def deadline(self, limits: Limits) -> tuple[float, str] | None:
        """When the task is overdue, and why; None while no time rule applies (ended, cured)."""
        if self.phase == ENDED or self.restarted:
            return None
        if self.phase == PREPARE and self.failed_at is None:
            return (
                self.last_activity_at + limits.prepare,
                f"task {self.code}: still preparing, past its {limits.prepare:.0f} s allowance",
            )
        if self.phase == WORK and self.failed_at is None:
            allowance = limits.task_allowance(self.audio_seconds or 0.0)
            return (
                self.last_activity_at + allowance,
                f"task {self.code} ({self.audio_seconds:g} s of audio) did not end within its {allowance:.0f} s "
                "allowance",
            )
        if self.failed_at is not None:
            return self.failed_at + limits.stall, f"task {self.code} failed and did not end"
        if self.phase == FRAMES:
            return self.last_activity_at + limits.stall, f"task {self.code}: no frame progress"
        if self.phase == ENCODE:
            allowance = limits.encode_allowance(self.frames)
            return (
                self.last_activity_at + allowance,
                f"task {self.code}: final encode of {self.frames} frames past its {allowance:.0f} s allowance",
            )
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "outcome": self.outcome or "running",
            "phase": self.phase,
            "frames": self.frames,
            "fps": self.fps,
            "audio_seconds": self.audio_seconds,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "failure": self.failure,
        }


class TaskLedger:
    """The tasks an app has run: open ones by code, the last `history` finished ones (None: all, for a replay),
    and those finished since a reader last took them (metrics)."""

    def __init__(self, history: int | None = TASK_HISTORY) -> None:
        self.history: deque[Task] = deque(maxlen=history)
        self.open_tasks: dict[str, Task] = {}
        self.finished: list[Task] = []

    def find(self, code: str | None, now: float, running: tuple[str, ...] = ()) -> Task | None:
        """The task a record is about: the open one its code names, or a task whose start was not seen (the
        watch began mid-task). A record without a code (HeyGem's frame lines have none) belongs to the newest
        open task in the first of the `running` phases that has one (frames belong to the task whose frames
        run, not to one that has just started), else to the newest open task; to none when none is open."""
        if code is not None:
            if code not in self.open_tasks:
                self.open_tasks[code] = Task(code, now)
            return self.open_tasks[code]
        tasks = list(reversed(self.open_tasks.values()))
        by_phase = (t for phase in running for t in tasks if t.phase == phase)
        return next(by_phase, tasks[0] if tasks else None)

    def close(self, task: Task) -> None:
        self.open_tasks.pop(task.code, None)
        self.history.append(task)
        self.finished.append(task)

    def tasks(self) -> list[Task]:
        """Every task seen, oldest first (the last TASK_HISTORY finished ones and those still open)."""
        return sorted([*self.history, *self.open_tasks.values()], key=lambda t: t.started_at)

    def task(self, code: str | None) -> Task | None:
        if code is None:
            return next(reversed(self.open_tasks.values()), None)
        return self.open_tasks.get(code) or next((t for t in reversed(self.history) if t.code == code), None)

    def take_finished(self) -> list[Task]:
        """The tasks that ended (or whose process went) since the last call."""
        finished, self.finished = self.finished, []
        return finished

    def finish(self) -> None:
        """The end of a recording, or of the app's process: what is still open never ended."""
        for task in list(self.open_tasks.values()):
            task.hang()
            self.close(task)
