"""Pure: one HeyGem task as its log records tell it, phase by phase, and when it is overdue.

A task, from HeyGem's source and real log (FIELD.md section 2): the start line `任务:c -> audio_url:…`, a
preparation phase (ffmpeg, audio features, init_wh: no time rule, it may take long), the frame loop from
`[c]任务视频驱动队列启动` (producer lines `drivered_video … 发送数据大小`, consumer lines `audio_transfer …
发送完成数据大小:4, frameId:K`, one per 4 frames done: frames are counted from these only), the end of the
frames (`[c]任务数字人图片处理已完成`, the writer's `视频帧队列处理已结束`, `Custom command:ffmpeg …`), a final
encode with no line at all (19 s for 150 frames, 95 s for 1,500), and `>>> 任务:c 耗时:T` in a `finally`:
the end of every task, successful or not, unless it hangs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREPARE, FRAMES, ENCODE, ENDED = "prepare", "frames", "encode", "ended"
DONE, FAILED, HUNG = "done", "failed", "hung"


@dataclass(frozen=True)
class Limits:
    """The time rules, in seconds (HEYGEM_STALL_SECONDS, HEYGEM_ENCODE_SECONDS[_PER_FRAME])."""

    stall: float
    encode: float
    encode_per_frame: float

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

    def failed(self, line: str, now: float) -> None:
        if self.failed_at is None:
            self.failed_at, self.failure = now, line

    def end(self, now: float) -> None:
        self.phase, self.ended_at = ENDED, now
        if self.outcome is None:
            self.outcome = FAILED if self.failed_at is not None else DONE

    def hang(self) -> None:
        if self.outcome is None:
            self.outcome = HUNG

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
        """When the task is overdue, and why; None while no time rule applies (preparing, ended, cured)."""
        if self.phase == ENDED or self.restarted:
            return None
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
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "failure": self.failure,
        }
