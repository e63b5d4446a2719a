"""Pure: what each of HeyGem's two log dialects says, as one table each. The watchdog applies whichever
table the record's own format names (`heygem_log.parse_record`), so one launcher reads both without a
setting.

- A: HeyGem-Linux-Python-Hack, and HeyGem.ai's image up to May 2025 (FIELD.md section 2,
  FIELD-heygem-ai.md 4.2). Its texts are the `HEYGEM_PATTERN_*` and `HEYGEM_READY_MARKERS` settings, so an
  operator can tune them on their own logs; the rest of its table is fixed here.
- B: HeyGem.ai / Duix.Avatar's gen-video image since late May 2025 (FIELD-heygem-ai.md 4.1, 5, 7, 8). No
  per-frame line is known in B, so a task has one allowance from its length instead of a frame clock.

Every pattern is matched against a record's message after its task code was replaced by `heygem_log.CODE`
(a caller's code may hold any text), never against a whole line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.config.settings import Settings
from launcher.watch.heygem_log import CODE, A, B

C = re.escape(CODE)
# A pattern that never matches: a dialect that has no such line.
NEVER = re.compile(r"(?!)")
# `GET /easy/query?code=` of an unknown code answers 10004 once Flask listens (FIELD-heygem-ai.md 5).
QUERY_PROBE = "/easy/query?code=heygem-launch-probe"


@dataclass(frozen=True)
class Dialect:
    name: str
    # Every marker must be logged (a message starting with it, HeyGem's banner stars aside) since the last
    # `process_start`; a `worker_spawn` makes the `worker_markers` count again from there.
    ready_markers: tuple[str, ...]
    worker_markers: tuple[str, ...]
    process_start: re.Pattern[str]
    worker_spawn: re.Pattern[str]
    # ERROR records.
    blocked: re.Pattern[str]  # the pipeline is blocked: restart
    wedged: re.Pattern[str]  # HeyGem's own timeout: its workers are gone or stuck; every later task hangs
    failure: re.Pattern[str]  # a task failed; it ends and the service stays healthy
    # WARNING: HeyGem restarts its own workers; recorded, a restart when it comes again within a window.
    self_heal: re.Pattern[str]
    # A task's life.
    task_start: re.Pattern[str]
    task_info: re.Pattern[str]  # its first group: the task's audio seconds (B); its allowance runs from here
    frames_start: re.Pattern[str]
    progress: re.Pattern[str]
    frames: re.Pattern[str]
    frames_done: re.Pattern[str]
    task_end: re.Pattern[str]
    # How `probe ready` asks the app's port: a method and a path.
    api: tuple[str, str]


def dialect_a(s: Settings) -> Dialect:
    return Dialect(
        name=A,
        ready_markers=s.ready_markers,
        worker_markers=(),
        # Every run of HeyGem.ai's app_local.py starts with it (register.enable = 0); the Hack never logs it.
        process_start=re.compile(r"^ -> 服务不进行注册$"),
        worker_spawn=NEVER,
        blocked=s.pattern_blocked,
        # The init_wh answer's 10-s `_queue.Empty` (`异常信息:[]`) and the image's 600-s `no final result`.
        wedged=re.compile(r"^\[[^\]]+\]任务执行失败\uff0c异常信息:\[(?:no final result)?\]$"),
        failure=s.pattern_failure,
        self_heal=NEVER,
        task_start=s.pattern_task_start,
        task_info=NEVER,
        frames_start=s.pattern_frames_start,
        progress=s.pattern_progress,
        frames=s.pattern_frames,
        frames_done=s.pattern_frames_done,
        task_end=s.pattern_task_end,
        # Gradio answers `HEAD /`; the image's Flask answers it too (404: no such route, but it listens).
        api=("HEAD", "/"),
    )


B_WORKERS = (
    "system ->init_wh_process module load success",
    "system ->get_aud_feat1 module load success",
    "system ->av_transfer load success",
)

DIALECT_B = Dialect(
    name=B,
    # The three workers once their models are loaded, and Flask's banner (15 s after the spawn, a fixed sleep).
    ready_markers=(*B_WORKERS, "TransDhServer服务启动"),
    worker_markers=B_WORKERS,
    process_start=re.compile(r"^ -> 服务不进行注册$"),
    # At every spawn of the workers, the first and after HeyGem's own restart of them: logged before loading.
    worker_spawn=re.compile(r"^system ->init_wh_process start"),
    blocked=NEVER,  # B's queue-full line is in no report; its own watchdog line is `self_heal`
    wedged=re.compile(rf"^{C} ?-> ?任务执行失败\uff0c异常信息:\[no final result\]"),
    failure=re.compile(rf"^{C} ?-> ?任务执行失败\uff0c异常信息:"),
    self_heal=re.compile(rf"^{C} ?->av_transfer maybe blocked, restart"),
    task_start=re.compile(rf"^{C} ?->audio_url:"),
    task_info=re.compile(rf"^{C} ?-> ?video_info:\[[^\]]*\], audio_info:\[([0-9]+(?:\.[0-9]+)?)\]"),
    frames_start=NEVER,
    progress=NEVER,
    frames=NEVER,
    frames_done=NEVER,
    task_end=re.compile(rf"^{C} ?-> ?耗时:"),
    api=("GET", QUERY_PROBE),
)


def tables(settings: Settings) -> dict[str, Dialect]:
    return {A: dialect_a(settings), B: DIALECT_B}


def api_of(dialect: str | None) -> tuple[str, str]:
    """How `probe ready` asks the app (the Hack's way until a record said otherwise)."""
    return DIALECT_B.api if dialect == B else ("HEAD", "/")
