"""The watchdog's rules on dialect B, HeyGem.ai / Duix.Avatar's image (FIELD.md section 7, FIELD-heygem-ai.md),
record by record (pure), and the preparation allowance both dialects now have. Before issue 17 none of these B
records was parsed: every case here failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config.settings import build_settings
from launcher.watch.heygem_log import parse_record, split_code
from launcher.watch.watchdog import BLOCKED, RECORD, RESTART, STALL, TASK_FAILED, Watchdog

C = "71e6b361-29b1-47e1-bfc0-032dd8bbe56e"
MARKERS = [
    "system ->init_wh_process module load success, cost:2.270s",
    "system ->get_aud_feat1 module load success, cost:3.791s",
    "system ->av_transfer load success ..., cost:11.839s ",
    "******************* TransDhServer服务启动 *******************",
]


def b(message: str, level: str = "INFO", file: str = "threading.py[line:870]") -> str:
    return f"2025-06-06 10:10:38,930-[service.self_logger]-{file}-{level}: {message}"


def watchdog(**environ: str) -> Watchdog:
    return Watchdog(build_settings({}, environ, {}, cwd=Path("/")), fallback_guard=True)


def started(dog: Watchdog, t: float = 0.0) -> None:
    dog.feed(b(" -> 服务不进行注册", "WARNING", "app_local.py[line:219]"), t)
    dog.feed(b("system ->init_wh_process start...", file="process.py[line:108]"), t)
    for marker in MARKERS:
        dog.feed(b(marker, file="process.py[line:108]"), t)


def task(dog: Watchdog, t: float, audio: float = 10.63, code: str = C) -> None:
    assert dog.feed(b(f"{code} ->audio_url:a.wav, video_url:v.mp4, chaofen:0, pn:1"), t) == []
    assert dog.feed(b(f"{code} -> video_info:[30.0/720/1280/9.67], audio_info:[{audio}]"), t + 0.2) == []


def test_b_records_parse_with_their_code() -> None:
    record = parse_record(b(f"{C} -> 任务执行失败，异常信息:[no final result]", "ERROR"))
    assert record is not None and record.dialect == "B" and record.level == "ERROR"
    assert split_code(record.message, dialect="B") == (C, "<c> -> 任务执行失败，异常信息:[no final result]")
    assert split_code("system ->start to release queue...", dialect="B") == (None, "system ->start to release queue...")
    assert split_code(" -> 服务不进行注册", dialect="B")[0] is None
    assert split_code("job -> 1 ->audio_url:x", ["job -> 1"], dialect="B") == ("job -> 1", "<c> ->audio_url:x")
    # Not HeyGem's logger: a user's text that looks like a record is not one.
    assert parse_record("2025-06-06 10:10:38,930-[evil]-x.py[line:1]-ERROR: a -> 任务执行失败") is None


def test_ready_after_every_marker_since_the_last_start() -> None:
    dog = watchdog()
    dog.feed(b(" -> 服务不进行注册", "WARNING"), 0)
    dog.feed(b("system ->init_wh_process start..."), 0)
    assert not dog.ready and dog.missing_markers[0] == "system ->init_wh_process module load success"
    for marker in MARKERS[:-1]:
        dog.feed(b(marker), 1)
    assert dog.missing_markers == ["TransDhServer服务启动"]
    dog.feed(b(MARKERS[-1], file="app_local.py[line:222]"), 15)
    assert dog.ready and dog.ready_at == 15
    # HeyGem restarts its workers: not ready until they say they loaded again.
    dog.feed(b("system ->init_wh_process start...", file="process.py[line:108]"), 20)
    assert not dog.ready
    for marker in MARKERS[:-1]:
        dog.feed(b(marker), 21)
    assert dog.ready
    # A new run of the process (the container restarted): everything again.
    dog.feed(b(" -> 服务不进行注册", "WARNING"), 30)
    assert not dog.ready and len(dog.missing_markers) == 4


def test_a_normal_task_ends_and_a_silent_one_stalls_by_its_length() -> None:
    dog = watchdog()
    started(dog)
    task(dog, 100, audio=9.52)
    assert dog.next_deadline() == pytest.approx(100.2 + 120 + 95.2)
    assert dog.feed(b(f"{C} -> 耗时:44.602s "), 144.8) == []
    assert dog.tasks()[0].outcome == "done" and dog.next_deadline() is None
    task(dog, 200, audio=10.63, code="2")
    assert dog.check(200.2 + 226.2) == []
    (stall,) = dog.check(200.2 + 226.3 + 0.01)
    assert (stall.kind, stall.action, stall.code) == (STALL, RESTART, "2")


def test_heygems_own_timeout_restarts_once_ready_and_is_recorded_before() -> None:
    dog = watchdog(HEYGEM_TASK_SECONDS="3600")
    started(dog)
    task(dog, 0)
    (found,) = dog.feed(b(f"{C} -> 任务执行失败，异常信息:[no final result]", "ERROR"), 600.3)
    assert (found.kind, found.action) == (TASK_FAILED, RESTART)
    assert dog.tasks()[0].outcome == "failed", "HeyGem gave up on it: its failure line says how it ended"
    loading = watchdog(HEYGEM_TASK_SECONDS="3600")
    task(loading, 0)
    (found,) = loading.feed(b(f"{C} -> 任务执行失败，异常信息:[no final result]", "ERROR"), 600.3)
    assert (found.kind, found.action) == (TASK_FAILED, RECORD)


def test_any_other_failure_is_recorded_and_user_text_never_fires() -> None:
    dog = watchdog()
    started(dog)
    task(dog, 0)
    (found,) = dog.feed(b(f"{C} -> 任务执行失败，异常信息:[三次获取音频时长失败]", "ERROR"), 1)
    assert (found.kind, found.action) == (TASK_FAILED, RECORD)
    user = "x ->audio_url:任务执行失败，异常信息:[no final result].wav, video_url:maybe blocked, restart.mp4, pn:1"
    assert dog.feed(b(user), 2) == []
    assert dog.feed(b("x ->av_transfer maybe blocked, restart...", "INFO"), 3) == [], "only HeyGem's WARNING"


def test_heygems_own_worker_restart_is_recorded_then_restarts_when_it_repeats() -> None:
    dog = watchdog(HEYGEM_TASK_SECONDS="3600", HEYGEM_WORKER_RESTART_WINDOW="300")
    started(dog)
    task(dog, 0)
    heal = b(f"{C} ->av_transfer maybe blocked, restart...", "WARNING")
    (first,) = dog.feed(heal, 60)
    assert (first.kind, first.action) == (BLOCKED, RECORD)
    (second,) = dog.feed(heal, 200)
    assert (second.kind, second.action) == (BLOCKED, RESTART)
    other = watchdog(HEYGEM_TASK_SECONDS="3600", HEYGEM_WORKER_RESTART_WINDOW="100")
    started(other)
    task(other, 0)
    assert [i.action for i in other.feed(heal, 60) + other.feed(heal, 200)] == [RECORD], "outside the window"


def test_a_task_stuck_preparing_has_an_allowance_in_both_dialects() -> None:
    """The Hack's preparation (ffmpeg, features, init_wh) had no time rule: a task stuck there waited for HeyGem's
    own timeout. B's downloads before video_info, likewise."""
    dog = watchdog(HEYGEM_PREPARE_SECONDS="30")
    dog.feed(f"[2025-11-09 17:20:00,000] [app.py[line:210]] [INFO] [任务:{C} -> audio_url:a.wav  video_url:v.mp4]", 0)
    (stall,) = dog.check(30)
    assert (stall.kind, stall.action) == (STALL, RESTART) and "still preparing" in stall.line
    b_dog = watchdog(HEYGEM_PREPARE_SECONDS="30")
    b_dog.feed(b(f"{C} ->audio_url:https://example.com/a.wav, video_url:https://example.com/v.mp4, pn:1"), 0)
    assert b_dog.check(29.9) == [] and [i.kind for i in b_dog.check(30)] == [STALL]
