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
