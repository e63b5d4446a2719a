"""`heygem-launch replay` over the shared scenarios of what HeyGem really writes (tests/scenarios/heygem-replay):
each reaches its expected.json (readiness, each task's outcome, the incidents in order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_no_traceback
from tests.scenarios import HEYGEM_REPLAY as SCENARIOS

NAMES = sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_reaches_its_expected_outcome(launch, name: str) -> None:
    folder = SCENARIOS / name
    expected = json.loads((folder / "expected.json").read_text())
    run = launch("replay", str(folder / "dh.log"), "--stderr", str(folder / "stderr.log"), "--json")
    assert run.returncode == 0, run.stderr
    got = run.json
    assert got["ready"] is expected["ready"]
    assert [(t["code"], t["outcome"]) for t in got["tasks"]] == [(t["code"], t["outcome"]) for t in expected["tasks"]]
    assert [i["kind"] for i in got["incidents"]] == expected["incidents"]
    for task in got["tasks"]:
        if task["outcome"] == "done" and "ort-on-cpu" not in name:
            assert 7 < task["fps"] < 9.5, "HeyGem's GPU baseline: ~0.46 s per batch of 4 frames"
    for incident in got["incidents"]:
        assert incident["action"] == {"stall": "restart", "blocked": "restart", "task_failed": "record"}.get(
            incident["kind"], "stop"
        )


def test_stdout_adds_nothing_to_readiness(launch) -> None:
    """Gradio's 'Running on local URL' is only in stdout.log: readiness never needs it."""
    folder = SCENARIOS / "06-workers-not-up"
    run = launch("replay", str(folder / "dh.log"), "--stdout", str(folder / "stdout.log"), "--json")
    assert run.json["ready"] is False
    assert run.json["missing_markers"] == [">>> init_wh_process进程启动", ">>> 数字人图片处理进程启动"]


def test_people_output_names_tasks_incidents_and_actions(launch) -> None:
    folder = SCENARIOS / "03-queue-full"
    run = launch("replay", str(folder / "dh.log"), "--stderr", str(folder / "stderr.log"))
    assert run.returncode == 0
    assert "ready: yes" in run.stdout and "7ed4d57b-c2ce-4a1b-9c2d-78e57311d8a3  hung" in run.stdout
    assert "stall        -> restart" in run.stdout and "blocked      -> restart" in run.stdout


def test_the_log_file_alone_gives_the_same_outcome(launch) -> None:
    folder = SCENARIOS / "04-task-failed-then-ok"
    run = launch("replay", str(folder / "dh.log"), "--json")
    assert [t["outcome"] for t in run.json["tasks"]] == ["failed", "done"]
    assert [i["kind"] for i in run.json["incidents"]] == ["task_failed"]


def test_a_missing_or_unreadable_file_is_one_line(launch, tmp_path: Path) -> None:
    missing = launch("replay", str(tmp_path / "nope.log"))
    assert missing.returncode == 64 and "nope.log" in missing.stderr
    assert_no_traceback(missing)
    folder = tmp_path / "dir.log"
    folder.mkdir()
    run = launch("replay", str(folder))
    assert run.returncode == 64 and "dir.log" in run.stderr
    assert_no_traceback(run)


def test_replay_runs_off_the_apps_machine_with_its_settings(launch, tmp_path: Path) -> None:
    """An operator replays a log on a laptop with the container's heygem.env: the app's folder (/code) is not
    there, and replay does not need it (before: exit 78, "HEYGEM_APP_DIR='/code': not a directory"). A bad value
    is still refused, as anywhere."""
    folder = SCENARIOS / "03-queue-full"
    env_file = tmp_path / "heygem.env"
    env_file.write_text(f"HEYGEM_APP_DIR={tmp_path}/code\nHEYGEM_APP_LOG={tmp_path}/code/log/dh.log\n")
    args = ("replay", str(folder / "dh.log"), "--stderr", str(folder / "stderr.log"), "--json")
    here, there = launch(*args), launch(*args, "--env-file", str(env_file))
    assert here.returncode == there.returncode == 0, there
    assert {**there.json, "files": None} == {**here.json, "files": None}
    env_file.write_text(f"HEYGEM_APP_DIR={tmp_path}/code\nHEYGEM_STALL_SECONDS=soon\n")
    bad = launch(*args, "--env-file", str(env_file))
    assert bad.returncode == 78 and "HEYGEM_STALL_SECONDS='soon'" in bad.stderr, bad
    assert_no_traceback(bad)


def _replay_peak(folder: Path, lines: int, tail: bytes = b"") -> tuple[int, int]:
    """(lines replayed, peak bytes Python allocated during the replay) over a dh.log of `lines` HeyGem records,
    one per 10 ms, and `tail` after them; in this process, as `heygem-launch replay` runs it."""
    import tracemalloc

    from launcher.config.settings import build_settings
    from launcher.watch.replay import replay

    log = folder / "dh.log"
    with log.open("wb") as handle:
        for n in range(lines):
            second, ms = divmod(n * 10, 1000)
            stamp = f"2025-11-09 {17 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d},{ms:03d}"
            handle.write(f"[{stamp}] [app.py[line:159]] [INFO] [heartbeat {n}: nothing to see]\n".encode())
        handle.write(tail)
    settings = build_settings({}, {}, {}, cwd=folder)
    tracemalloc.start()
    try:
        result = replay(settings, log)
        return result.lines, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_replay_holds_a_line_per_stream_not_the_log(tmp_path: Path) -> None:
    """An operator replays weeks of dh.log: memory stays flat in the log's length (before, every line was kept,
    ~1 GB of Python objects per ~300 MB of log). Ten times the lines, about the same peak."""
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    lines_small, peak_small = _replay_peak(small, 5_000)
    lines_big, peak_big = _replay_peak(big, 50_000)
    assert (lines_small, lines_big) == (5_000, 50_000)
    assert peak_big < 2 * peak_small + 2**20, (peak_small, peak_big)


def test_replay_reads_no_more_of_an_endless_line_than_it_keeps(tmp_path: Path) -> None:
    """A 64 MB line without a newline (a binary dump written into the log) is cut at HEYGEM_LINE_MAX (64KB) and
    the rest skipped in pieces: it is never read whole into memory."""
    lines, peak = _replay_peak(tmp_path, 10, tail=b"x" * (64 * 2**20))
    assert lines == 11
    assert peak < 8 * 2**20, peak


def test_a_log_still_being_written_is_replayed_as_it_was_when_opened(tmp_path: Path) -> None:
    """Streaming must not chase a growing file (found by a helper: a writer at 8 MB/s kept a replay reading for
    as long as it wrote). What was appended after the open is not read."""
    from launcher.watch.replay import LOG, _recorded, read_lines

    log = tmp_path / "dh.log"
    log.write_bytes(
        b"".join(b"[2025-11-09 17:20:%02d,000] [app.py[line:1]] [INFO] [line %d]\n" % (n, n) for n in range(10))
    )
    with _recorded(log) as handle:
        size = log.stat().st_size
        with log.open("ab") as writer:
            writer.write(b"[2025-11-09 17:21:00,000] [app.py[line:1]] [INFO] [written later]\n" * 1000)
        lines = list(read_lines(handle, size, LOG, 2**16))
    assert [line.text.rsplit("[", 1)[1] for line in lines] == [f"line {n}]" for n in range(10)]


def test_replay_cuts_lines_as_the_running_service_does(tmp_path: Path) -> None:
    """One record, one verdict: a line over HEYGEM_LINE_MAX reaches the rules in a replay exactly as from the
    followed file in the service (cut at the same byte, CUT_MARK appended, the rest dropped), short lines,
    blank lines and a last line without a newline alike."""
    from launcher.system.follow import Follower
    from launcher.watch.replay import LOG, _recorded, read_lines

    log = tmp_path / "dh.log"
    log.write_bytes(b"short\n" + b"y" * 5000 + b"\n\n" + b"z" * 4096 + b"\n" + b"w" * 9000 + b"\nlast")
    follower = Follower(log, line_max=4096)
    live = [raw.decode() for raw in follower.read() + follower.flush()]
    follower.close()
    with _recorded(log) as handle:
        replayed = [line.text for line in read_lines(handle, log.stat().st_size, LOG, 4096)]
    assert replayed == live
    assert live[1].endswith("[...line cut]") and live[3] == "z" * 4096 and live[-1] == "last"
