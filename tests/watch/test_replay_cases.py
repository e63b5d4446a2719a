"""Cases a tester found by replaying variations of tests/scenarios/heygem-replay that a real HeyGem log can
take (a task code the caller picks, a log that begins mid-task, ...): each failed before its fix. The
variations are plain text edits of the shared scenarios."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.settings import build_settings
from launcher.watch.watchdog import CPU_FALLBACK, Watchdog
from tests.scenarios import HEYGEM_REPLAY as SCENARIOS

CODES = {
    "01-success": "2265b1f5-91b7-4a1b-9c2d-cd61d8f16adf",
    "03-queue-full": "7ed4d57b-c2ce-4a1b-9c2d-78e57311d8a3",
    "04-task-failed-then-ok": "a6cecc1b-612e-4a1b-9c2d-35bfc9e9c616",
}


def variant(tmp_path: Path, name: str, edit) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    out = []
    for stream in ("dh.log", "stderr.log"):
        target = tmp_path / f"{name}-{stream}"
        target.write_text(edit((SCENARIOS / name / stream).read_text()))
        out.append(target)
    return out[0], out[1]


def replay(launch, dh: Path, stderr: Path | None = None, env: dict[str, str] | None = None) -> dict:  # type: ignore[no-untyped-def]
    args = ["replay", str(dh)] + (["--stderr", str(stderr)] if stderr else []) + ["--json"]
    run = launch(*args, env=env)
    assert run.returncode == 0, run.stderr
    return run.json


# -- task codes the caller picks (FIELD.md section 2: "a number or a UUID the caller picks") ----------------
@pytest.mark.parametrize("code", ["task 1", "任务 1"])
def test_a_code_with_a_space_still_ends_its_task(launch, tmp_path: Path, code: str) -> None:
    """HeyGem writes `>>> 任务:task 1 耗时:59.3`; the end pattern `^>>> 任务:\\S+ 耗时:` misses it, so a
    successful task 'hangs' in its encode and the healthy app is restarted (stall, restart)."""
    dh, err = variant(tmp_path, "01-success", lambda t: t.replace(CODES["01-success"], code))
    got = replay(launch, dh, err)
    assert [(t["code"], t["outcome"]) for t in got["tasks"]] == [(code, "done")]
    assert got["incidents"] == []


@pytest.mark.parametrize("code", ["a]b", "job[2]"])
def test_a_code_with_a_bracket_failure_is_still_recorded(launch, tmp_path: Path, code: str) -> None:
    """`[a]b]预处理失败…`: the failure pattern `^\\[[^\\]]+\\]预处理失败` cannot match, so the failed task is
    reported `done` and no task_failed snapshot is taken."""
    dh, err = variant(tmp_path, "04-task-failed-then-ok", lambda t: t.replace(CODES["04-task-failed-then-ok"], code))
    got = replay(launch, dh, err)
    assert [t["outcome"] for t in got["tasks"]] == ["failed", "done"]
    assert [i["kind"] for i in got["incidents"]] == ["task_failed"]


def test_a_code_with_a_bracket_queue_full_is_still_blocked(launch, tmp_path: Path) -> None:
    """Same cause: HeyGem's queue-full ERROR record for code `a]b` is not seen as `blocked`."""
    dh, err = variant(tmp_path, "03-queue-full", lambda t: t.replace(CODES["03-queue-full"], "a]b"))
    got = replay(launch, dh, err)
    assert [i["kind"] for i in got["incidents"]] == ["stall", "blocked"]


# -- a log that begins in the middle of a task (rotated dh.log, an operator's excerpt) ----------------------
def test_a_log_that_begins_mid_frames_has_no_phantom_task(launch, tmp_path: Path) -> None:
    """The first consumer line has no code and no task is running: a task `#1` is made up, gets the frames,
    and after the real task's end line it is still open: a stall (restart) 20 s later, for a task that
    succeeded. The real task is listed with 0 frames."""

    def cut(text: str) -> str:
        lines = text.splitlines(True)
        first = next(i for i, line in enumerate(lines) if "frameId:40," in line)
        return "".join(lines[first:])

    dh, err = variant(tmp_path, "01-success", cut)
    got = replay(launch, dh, err)
    assert got["incidents"] == [], got["incidents"]
    assert [t["outcome"] for t in got["tasks"]] == ["done"]


# -- a second task's start line while the first one's frames run ---------------------------------------------
def test_a_second_start_line_does_not_steal_the_running_tasks_frames(launch, tmp_path: Path) -> None:
    """Consumer lines carry no code and go to the task that started last: once a second `任务:B -> …` line is
    logged (a queued submission), the running task gets no more progress and is restarted for a stall
    while its frames are still coming. Applies wherever HeyGem logs a start before the previous task ended."""

    def second_start(text: str) -> str:
        lines = text.splitlines(True)
        i = next(k for k, line in enumerate(lines) if "frameId:40," in line)
        stamp = re.match(r"^\[([^\]]+)\]", lines[i]).group(1)  # type: ignore[union-attr]
        extra = f"[{stamp}] [app.py[line:210]] [INFO] [任务:B -> audio_url:./temp/a.wav  video_url:./temp/b.mp4]\n"
        return "".join([*lines[: i + 1], extra, *lines[i + 1 :]])

    folder = SCENARIOS / "08-long-video"
    dh = tmp_path / "dh.log"
    dh.write_text(second_start((folder / "dh.log").read_text()))
    got = replay(launch, dh)
    first = got["tasks"][0]
    assert first["outcome"] == "done" and first["frames"] == 1500, got["tasks"]
    assert "stall" not in [i["kind"] for i in got["incidents"] if i["code"] == first["code"]]


# -- a log across a DST change (the app's local time repeats an hour) ---------------------------------------
def test_a_log_across_a_dst_fall_back_keeps_file_order(launch, tmp_path: Path) -> None:
    """merge() sorts every line by its parsed time: when the wall clock goes back an hour (Europe/Berlin,
    2025-10-26 03:00 -> 02:00) lines written later sort before earlier ones: phantom tasks and stalls."""
    import datetime as dt

    base = dt.datetime(2025, 10, 26, 2, 59, 30) - dt.datetime(2025, 11, 9, 17, 20, 0)
    fold = dt.datetime(2025, 10, 26, 3, 0, 0)

    def shift(text: str) -> str:
        out = []
        for line in text.splitlines(True):
            m = re.match(r"^(\[?)(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
            if m:
                t = dt.datetime.strptime(m.group(2), "%Y-%m-%d %H:%M:%S") + base
                if t >= fold:
                    t -= dt.timedelta(hours=1)  # what the app writes after the change
                line = m.group(1) + t.strftime("%Y-%m-%d %H:%M:%S") + line[m.end() :]
            out.append(line)
        return "".join(out)

    dh, err = variant(tmp_path, "01-success", shift)
    got = replay(launch, dh, err, env={"TZ": "Europe/Berlin"})
    assert [(t["code"], t["outcome"]) for t in got["tasks"]] == [(CODES["01-success"], "done")]
    assert got["incidents"] == []


# -- ONNX Runtime's own lines as newer builds really write them ------------------------------------------
def test_real_onnxruntime_fallback_lines_of_this_build_are_seen(tmp_path: Path) -> None:
    """The test venv's real onnxruntime-gpu (1.20 and 1.31 do this; 1.16 does not) colours its E/W lines with
    ANSI escapes even into a pipe (`\\x1b[1;31m2026-… [E:onnxruntime:…] Failed to load library
    …providers_cuda…`): the fallback pattern, anchored at `^\\d{4}-`, misses them. On this machine (no GPU)
    the CUDA provider really fails to load."""
    model = tmp_path / "relu.onnx"
    script = f"""
import onnx, onnxruntime as ort
from onnx import helper, TensorProto
x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])
y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])
g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)]); m.ir_version = 8
onnx.save(m, {str(model)!r})
s = ort.InferenceSession({str(model)!r}, providers=[('CUDAExecutionProvider', {{'device_id': 0}})])
print(s.get_providers())
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    if "CUDAExecutionProvider" in run.stdout:
        pytest.skip("a working CUDA provider: nothing falls back here")
    assert "onnxruntime" in run.stderr, run.stderr
    dog = Watchdog(build_settings({}, {}, {}, cwd=Path("/")), fallback_guard=True)
    found = [i for line in run.stderr.splitlines() for i in dog.feed(line, 0.0, "output")]
    assert [i.kind for i in found] == [CPU_FALLBACK], run.stderr[:600]


def test_replay_json_is_json(launch) -> None:  # sanity for the helpers above
    folder = SCENARIOS / "01-success"
    got = replay(launch, folder / "dh.log", folder / "stderr.log")
    assert json.loads(json.dumps(got))["ready"] is True


def test_a_replay_lists_every_task_of_a_long_log(launch, tmp_path: Path) -> None:
    """README: replay prints 'each task (code, frames, frames/s, outcome)'. The watchdog keeps only its last
    TASK_HISTORY (100) finished tasks, so a replay of a real dh.log (it never rotates) with 150 tasks silently
    reports the last 100: the first 50 are gone, and nothing says so."""
    import datetime as dt

    lines = (SCENARIOS / "01-success" / "dh.log").read_text().splitlines(True)
    code = CODES["01-success"]
    start = next(i for i, line in enumerate(lines) if f"任务:{code}" in line)
    out = list(lines[:start])
    for k in range(150):
        for line in lines[start:]:
            stamp = dt.datetime.strptime(line[1:20], "%Y-%m-%d %H:%M:%S") + dt.timedelta(seconds=70 * k)
            out.append("[" + stamp.strftime("%Y-%m-%d %H:%M:%S") + line[20:].replace(code, f"task{k:03d}"))
    dh = tmp_path / "dh.log"
    dh.write_text("".join(out))
    got = replay(launch, dh)
    assert got["incidents"] == []
    assert [t["code"] for t in got["tasks"]] == [f"task{k:03d}" for k in range(150)]


def test_one_over_long_record_is_one_event() -> None:
    """Both copies of a record longer than HEYGEM_LINE_MAX are cut at the same byte count, but the log file's
    prefix is 4 bytes longer (`,mmm`), so the two cut messages differ, the copies are not recognised as one
    record and each opens its own incident (here: a code-less failure record outside a task: two task_failed
    snapshots for one record). README: 'One record, one event'."""
    from launcher.system.follow import CUT_MARK

    settings = build_settings({}, {}, {}, cwd=Path("/"))
    dog = Watchdog(settings, fallback_guard=True)
    message = "处理视频时发生错误: ValueError: " + "x" * 70_000
    found = []
    for stamp, source in (("2025-11-09 17:20:13,700", "log"), ("2025-11-09 17:20:13", "output")):
        raw = f"[{stamp}] [app.py[line:210]] [ERROR] [{message}]".encode()
        cut = raw[: settings.line_max] + CUT_MARK  # what launcher.system.follow.Follower hands on
        found += dog.feed(cut.decode(errors="replace"), 100.0, source)
    assert len(found) == 1, found
