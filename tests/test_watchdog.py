"""The watchdog's rules, line by line (pure: lines and times in, incidents out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.settings import build_settings
from launcher.watchdog import CPU_FALLBACK, QUEUE_BLOCKED, STALL, TASK_FAILED, Watchdog

# HeyGem's lines, in its format (FIELD.md section 2 and the incident write-up).
PREFIX = "[2025-11-09 17:29:40,294] [process.py[line:108]] [INFO] ["
BLOCKED = "[2025-11-09 17:30:40,324] [x.py[line:9]] [ERROR] [任务视频驱动队列满，严重阻塞，下游队列异常]"
PROGRESS = PREFIX + "drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[{n}], current_idx:{i}]"
START = PREFIX + "任务视频驱动队列启动 batch_size:4, len:150]"
SENT = PREFIX + "发送完成数据大小:4, frameId:{f}, cost:0.45]"


def watchdog(guard: bool = True, **environ: str) -> Watchdog:
    settings = build_settings({}, {"HEYGEM_STALL_SECONDS": "20", **environ}, {}, cwd=Path("/"))
    return Watchdog(settings, fallback_guard=guard)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (BLOCKED, QUEUE_BLOCKED),
        (PREFIX + "任务执行失败]", TASK_FAILED),
        (PREFIX + "数字人处理失败: _queue.Empty]", TASK_FAILED),
        (
            "2026-11-28 [W:onnxruntime:Default, x.cc:1295] Failed to create CUDAExecutionProvider. Require cuDNN 9.*",
            CPU_FALLBACK,
        ),
        (
            "[E:onnxruntime:Default] Failed to load library /x/libonnxruntime_providers_cuda.so with error: "
            "libcublasLt.so.13: cannot open shared object file",
            CPU_FALLBACK,
        ),
        ("EP Error ... Falling back to ['CPUExecutionProvider'] and retrying.", CPU_FALLBACK),
    ],
)
def test_lines_that_open_an_incident(line: str, kind: str) -> None:
    found = watchdog().feed(line, 100.0)
    assert found is not None and found.kind == kind and found.at == 100.0


def test_harmless_lines_open_nothing() -> None:
    dog = watchdog()
    for line in (PREFIX + "数字人图片处理进程启动]", START, PROGRESS.format(n=1, i=1), "", "   "):
        assert dog.feed(line, 1.0) is None


def test_one_incident_at_a_time() -> None:
    dog = watchdog()
    assert dog.feed(BLOCKED, 1.0) is not None
    assert dog.feed(BLOCKED.replace("40,324", "41,000"), 2.0) is None
    dog.reset(3.0)
    assert dog.feed(BLOCKED.replace("40,324", "42,000"), 4.0) is not None


def test_fallback_guard_off_for_the_cpu_provider() -> None:
    assert watchdog(guard=False).feed("Failed to create CUDAExecutionProvider", 1.0) is None


def test_stall_after_the_set_seconds_without_progress() -> None:
    dog = watchdog()
    dog.feed(START, 0.0)
    for i in range(1, 11):
        dog.feed(PROGRESS.format(n=1, i=i), float(i))
    assert dog.stall_deadline() == 30.0
    assert dog.check(29.9) is None
    found = dog.check(30.0)
    assert found is not None and found.kind == STALL and "current_idx:10" in found.line


def test_no_stall_before_a_task_or_after_its_end() -> None:
    dog = watchdog()
    assert dog.check(1000.0) is None and dog.stall_deadline() is None
    dog.feed(SENT.format(f=37), 1.0)
    dog.feed(SENT.format(f=-1), 2.0)  # the last frame's sentinel: the task is over
    assert dog.check(1000.0) is None


def test_the_same_record_from_log_and_stderr_counts_once() -> None:
    dog = watchdog()
    line = PROGRESS.format(n=4, i=1)
    dog.feed(line, 1.0, "log")
    dog.feed(line, 1.01, "output")
    assert len(dog.progress) == 1
    dog.feed(line, 10.0, "output")  # much later: a new line that looks the same
    assert len(dog.progress) == 2


def test_a_source_repeating_a_line_is_a_new_line() -> None:
    dog = watchdog(HEYGEM_READY_MARKERS="Running on local URL")
    dog.feed("Running on local URL:  http://127.0.0.1:7860", 1.0, "output")
    dog.reset(2.0)  # the app was restarted; the new one prints the very same line
    dog.feed("Running on local URL:  http://127.0.0.1:7860", 3.0, "output")
    assert dog.ready


def test_frames_per_second_from_the_progress_lines() -> None:
    dog = watchdog()
    for i in range(5):
        dog.feed(PROGRESS.format(n=4, i=i), 10.0 + i * 0.5)  # 4 frames every 0.5 s
        dog.feed(PROGRESS.format(n=4, i=i), 10.01 + i * 0.5, "output")  # the same records on stderr
    assert dog.frames_per_second() == 8.0


def test_ready_when_every_marker_was_seen() -> None:
    dog = watchdog()
    dog.feed(PREFIX + ">>> 数字人图片处理进程启动]", 1.0)
    dog.feed(PREFIX + ">>> init_wh_process进程启动]", 2.0)
    assert not dog.ready
    dog.feed("Running on local URL:  http://127.0.0.1:7860", 3.0)
    assert dog.ready and dog.ready_at == 3.0


def test_patterns_and_markers_are_settings() -> None:
    dog = watchdog(HEYGEM_PATTERN_BLOCKED=r"queue stuck", HEYGEM_READY_MARKERS="up")
    assert dog.feed(BLOCKED, 1.0) is None
    assert dog.feed("the queue stuck again", 2.0).kind == QUEUE_BLOCKED  # type: ignore[union-attr]
    dog.feed("server up", 3.0)
    assert dog.ready


def test_last_fifty_lines_kept_for_the_snapshot() -> None:
    dog = watchdog()
    for i in range(80):
        dog.feed(f"line {i}", float(i))
    assert list(dog.lines) == [f"line {i}" for i in range(30, 80)]
