"""The watchdog's rules, record by record (pure: lines and times in, incidents out), on HeyGem's real line
formats (FIELD.md section 2, ../shared/heygem-replay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config.settings import build_settings
from launcher.watch.heygem_log import parse_record, split_code
from launcher.watch.watchdog import BLOCKED, CPU_FALLBACK, RECORD, RESTART, STALL, STOP, TASK_FAILED, WARN, Watchdog


def line(message: str, level: str = "INFO", ms: str | None = "000", second: int = 0, file: str = "app.py") -> str:
    """A HeyGem record: the log file's copy (milliseconds) or, with ms=None, the stderr copy."""
    stamp = f"2025-11-09 17:20:{second:02d}" + (f",{ms}" if ms is not None else "")
    return f"[{stamp}] [{file}[line:210]] [{level}] [{message}]"


def watchdog(guard: bool = True, **environ: str) -> Watchdog:
    settings = build_settings({}, {"HEYGEM_STALL_SECONDS": "20", **environ}, {}, cwd=Path("/"))
    return Watchdog(settings, fallback_guard=guard)


C = "2265b1f5-91b7-4a1b-9c2d-cd61d8f16adf"
START = f"任务:{C} -> audio_url:./temp/audio.wav  video_url:./temp/video.mp4"
FRAMES_START = f"[{C}]任务视频驱动队列启动 batch_size:4, len:150"
PRODUCED = "drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[4], current_idx:4"
CONSUMED = "audio_transfer >>>>>>>>>>> 发送完成数据大小:4, frameId:{k}, cost:0.46s"
FRAMES_DONE = f"[{C}]任务数字人图片处理已完成"
ENCODE = f"Custom command:ffmpeg -loglevel warning -y -i ./temp/audio.wav ./result/{C}-r.mp4"
END = f">>> 任务:{C} 耗时:59.3451771736145 "
QUEUE_FULL = f"[{C}]任务视频驱动队列满，严重阻塞，下游队列异常"


def run_task(dog: Watchdog, t: float = 0.0, frames: int = 40) -> float:
    for message in (START, FRAMES_START, PRODUCED):
        assert dog.feed(line(message), t) == []
    for k in range(4, frames + 1, 4):
        t += 0.5
        assert dog.feed(line(CONSUMED.format(k=k)), t) == []
    return t


def test_record_parsing_both_copies_share_a_key() -> None:
    log_copy = parse_record(line(START, ms="082"))
    err_copy = parse_record(line(START, ms=None))
    assert log_copy is not None and err_copy is not None
    assert log_copy.key(100) == err_copy.key(100) and log_copy.precise and not err_copy.precise
    assert log_copy.at - err_copy.at == pytest.approx(0.082)
    assert split_code(START) == (C, "任务:<c> -> audio_url:./temp/audio.wav  video_url:./temp/video.mp4")
    assert split_code(QUEUE_FULL)[0] == C
    assert split_code("[a]b]预处理失败", ["a]b"]) == ("a]b", "[<c>]预处理失败")
    assert split_code(">>> 任务:job 1 耗时:1.5 ") == ("job 1", ">>> 任务:<c> 耗时:1.5 ")
    assert parse_record("2025-11-09 17:20:00.000000123 [E:onnxruntime:Default, x.cc:1] text") is None


def test_a_whole_task_with_its_silent_encode_opens_nothing() -> None:
    dog = watchdog()
    t = run_task(dog, frames=148)
    dog.feed(line(FRAMES_DONE), t)
    dog.feed(line(ENCODE), t)
    # HeyGem's final re-encode writes nothing for 19 s (150 frames): longer than the stall time.
    assert dog.check(t + 30) == []
    assert dog.feed(line(END), t + 30) == []
    (task,) = dog.tasks()
    assert (task.code, task.outcome, task.frames) == (C, "done", 148)
    assert task.fps == pytest.approx(144 / (t - 0.5))


@pytest.mark.parametrize(("frames", "allowance"), [(0, 60), (148, 97), (1500, 435)])
def test_the_encode_allowance_grows_with_the_frames(frames: int, allowance: float) -> None:
    dog = watchdog()
    t = run_task(dog, frames=frames)
    dog.feed(line(ENCODE), t)
    assert dog.next_deadline() == pytest.approx(t + allowance)
    assert dog.check(t + allowance - 0.1) == []
    (stall,) = dog.check(t + allowance)
    assert stall.kind == STALL and stall.action == RESTART and "final encode" in stall.line


def test_frames_that_stop_are_a_stall_after_the_stall_time() -> None:
    dog = watchdog()
    t = run_task(dog, frames=8)
    assert dog.next_deadline() == pytest.approx(t + 20)
    assert dog.check(t + 19.9) == []
    (stall,) = dog.check(t + 20)
    assert (stall.kind, stall.action, stall.code) == (STALL, RESTART, C)
    assert dog.check(t + 40) == [], "one incident per task and kind"


def test_ping_pong_mode_is_seen_starting() -> None:
    dog = watchdog()
    dog.feed(line(START), 0)
    dog.feed(line(f"[{C}]任务视频驱动队列启动 batch_size:4"), 1)
    dog.feed(line("drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[4]"), 1)
    assert dog.tasks()[0].phase == "frames" and dog.next_deadline() == 21


def test_queue_full_is_blocked_and_restarts() -> None:
    dog = watchdog()
    run_task(dog, frames=0)
    (found,) = dog.feed(line(QUEUE_FULL, "ERROR"), 60)
    assert (found.kind, found.action, found.code) == (BLOCKED, RESTART, C)
    assert dog.tasks()[0].outcome == "hung" and dog.next_deadline() is None


def test_a_failed_task_that_ends_is_recorded_once_and_not_restarted() -> None:
    dog = watchdog()
    dog.feed(line(START), 0)
    (found,) = dog.feed(line(f"[{C}]预处理失败，异常信息:[format video error]", "ERROR"), 0.1)
    assert (found.kind, found.action) == (TASK_FAILED, RECORD)
    assert dog.feed(line(f"[{C}]任务执行失败，异常信息:[format video error]", "ERROR"), 0.2) == []
    assert dog.feed(line(END), 0.3) == []
    assert dog.tasks()[0].outcome == "failed" and dog.check(100) == []


def test_a_failed_task_that_never_ends_has_hung() -> None:
    dog = watchdog()
    dog.feed(line(START), 0)
    dog.feed(line(f"[{C}]音频特征提取失败，异常信息:[x]", "ERROR"), 1)
    (hung,) = dog.check(21)
    assert (hung.kind, hung.action) == (STALL, RESTART) and "failed and did not end" in hung.line


@pytest.mark.parametrize(
    "message",
    [
        f"[{C}]任务执行失败，异常信息:[x]",
        f"[{C}]预处理失败，异常信息:[x]",
        f"[{C}]音频特征提取失败，异常信息:[x]",
        f"[{C}]任务视频驱动队列异常，异常信息:[x]",
        f"Custom VideoWriter [{C}]任务视频帧队列 -> 异常原因:[数字人处理失败，失败原因:[CUDA out of memory]]",
        f"Custom VideoWriter [{C}]视频帧队列处理异常结束，异常原因:[x]",
        "处理视频时发生错误: x",
        f"[{C}]init_wh exception: x",
    ],
)
def test_heygems_failure_lines(message: str) -> None:
    (found,) = watchdog().feed(line(message, "ERROR"), 1)
    assert found.kind == TASK_FAILED


USER_TEXT = [
    # User text: file names and codes appear in INFO messages, after HeyGem's own prefix.
    "任务:1 -> audio_url:./temp/队列满_任务视频驱动队列满，严重阻塞.wav  video_url:./temp/任务执行失败.mp4",
    "[1] -> ffmpeg video: ffmpeg -i ./temp/[1]任务视频驱动队列满.mp4",
]
NEVER_LOGGED = ["生成视频失败", "数字人处理失败", "frameId:-1"]  # an earlier version of these rules matched them


@pytest.mark.parametrize(
    ("message", "level"),
    [(m, "INFO") for m in USER_TEXT + NEVER_LOGGED] + [(m, "ERROR") for m in NEVER_LOGGED],
)
def test_text_a_user_controls_or_heygem_never_logs_opens_nothing(message: str, level: str) -> None:
    dog = watchdog()
    assert dog.feed(line(message, level), 1) == []
    assert all(t.phase == "prepare" for t in dog.tasks()), "no frames, no time rule"


def test_one_record_one_event_whichever_copy_comes_first() -> None:
    dog = watchdog()
    run_task(dog, frames=0)
    (first,) = dog.feed(line(QUEUE_FULL, "ERROR", ms=None, second=59), 60, "output")  # stderr first
    assert first.kind == BLOCKED
    dog.new_instance(None)  # the app was restarted
    assert dog.feed(line(QUEUE_FULL, "ERROR", ms="202", second=59), 75, "log") == []  # a late copy
    # A record about a task of the replaced process, even a new one, is that process's.
    assert dog.feed(line(QUEUE_FULL, "ERROR", ms="900", second=59), 76, "log") == []
    # The same text logged again by the same stream, about a task this process started, is a new record.
    dog.feed(line(START, second=50), 77)
    assert dog.feed(line(QUEUE_FULL, "ERROR", ms=None, second=51), 78, "output") != []
    assert dog.feed(line(QUEUE_FULL, "ERROR", ms="100", second=51), 78, "log") == []


def test_frames_are_counted_once_from_the_consumer_lines() -> None:
    dog = watchdog()
    for source in ("log", "output"):
        for message in (START, FRAMES_START, PRODUCED, CONSUMED.format(k=4), CONSUMED.format(k=8)):
            dog.feed(line(message, ms=None if source == "output" else "000"), 1, source)
    assert dog.tasks()[0].frames == 8


def test_records_stamped_before_the_instance_are_the_old_apps() -> None:
    dog = watchdog()
    started = parse_record(line("x", second=30)).at  # type: ignore[union-attr]
    dog.new_instance(started)
    # The dying app's second queue-full line, stamped before the new app started, arriving late.
    assert dog.feed(line(QUEUE_FULL, "ERROR", second=29), started + 2) == []
    assert dog.feed(line(QUEUE_FULL, "ERROR", ms=None, second=29), started + 2, "output") == []
    # Stamped with a clock far off (another time zone): never taken as old, the rules still apply.
    assert dog.feed(line(QUEUE_FULL, "ERROR", second=28), started + 7200) != []


def test_ready_needs_both_worker_markers_and_no_stdout() -> None:
    dog = watchdog()
    dog.feed("Running on local URL:  http://0.0.0.0:7860", 1, "output")
    dog.feed(line(">>> init_wh_process进程启动", file="process.py"), 2)
    assert not dog.ready and dog.missing_markers == [">>> 数字人图片处理进程启动"]
    dog.feed(line(">>> 数字人图片处理进程启动", file="process.py"), 3)
    assert dog.ready and dog.ready_at == 3
    dog.new_instance(None)
    assert not dog.ready


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-09 17:20:00.000000123 [E:onnxruntime:Default, provider_bridge_ort.cc:1193 TryGetProviderInfo_CUDA] "
        "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1193 onnxruntime::Provider& "
        "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
        "libonnxruntime_providers_cuda.so with error: libcudnn.so.8: cannot open shared object file",
        "2025-11-09 17:20:00.001000123 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:640 "
        "CreateExecutionProviderInstance] Failed to create CUDAExecutionProvider. Please reference ...",
        "Falling back to ['CPUExecutionProvider'] and retrying.",
        "/x/onnxruntime_inference_collection.py:69: UserWarning: Specified provider 'CUDAExecutionProvider' is not "
        "in available provider names.Available providers: 'CPUExecutionProvider'",
    ],
)
def test_onnxruntimes_own_fallback_lines(text: str) -> None:
    dog = watchdog()
    (found,) = dog.feed(text, 5, "output")
    assert (found.kind, found.action) == (CPU_FALLBACK, STOP)
    assert dog.feed(text, 6, "output") == [], "once per app process"
    assert watchdog(guard=False).feed(text, 5, "output") == []
    (warned,) = watchdog(HEYGEM_ON_CPU_FALLBACK="warn").feed(text, 5, "output")
    assert warned.action == WARN


@pytest.mark.parametrize(
    "text",
    [
        "EP Error CUDA failure 35: CUDA driver version is insufficient when using ['CUDAExecutionProvider']",
        "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.",
    ],
)
def test_ep_error_alone_is_no_cpu_fallback(text: str) -> None:
    """ONNX Runtime's Python layer prints `EP Error` before every retry; onnxruntime-gpu retries on CUDA again,
    which fails the same way and kills HeyGem.ai's worker (#471, #526, #592; duix-replay 03): the app is not
    ready, nothing runs on the CPU. Before, `^EP Error ` alone stopped the app with provider_not_used (69)."""
    assert watchdog().feed(text, 5, "output") == []


def test_fallback_words_inside_a_record_are_user_text() -> None:
    dog = watchdog()
    assert dog.feed(line("任务:1 -> audio_url:./EP Error Failed to create CUDAExecutionProvider.wav"), 1) == []


def test_settable_patterns_apply() -> None:
    dog = watchdog(HEYGEM_PATTERN_BLOCKED=r"^queue stuck")
    (found,) = dog.feed(line("queue stuck again", "ERROR"), 1)
    assert found.kind == BLOCKED and found.code is None
