"""`heygem-launch replay` over what HeyGem.ai / Duix.Avatar's gen-video image really writes
(tests/scenarios/duix-replay): dialect B as one container log (`replay NAME/container.log`), dialect A as the
Hack's streams (`replay NAME/dh.log --stderr NAME/stderr.log`). Each reaches its expected.json. Before issue 17
no B record was read: the B scenarios were never ready, had no task and no incident."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_no_traceback
from tests.scenarios import DUIX_REPLAY as SCENARIOS

NAMES = sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())
# What the service does about each incident: HeyGem's own timeout (`no final result`) restarts once the app was
# ready (02); in 03 the workers never loaded, so it is recorded (the stall before it restarted already).
ACTIONS = {
    "01-b-startup-then-task-done": [],
    "02-b-no-final-result": [("stall", "restart"), ("task_failed", "restart")],
    "03-b-cuda35-workers-dead": [("stall", "restart"), ("task_failed", "record")],
    "04-b-worker-restart-stuck": [("blocked", "record"), ("stall", "restart")],
    "05-a-queue-full": [("stall", "restart"), ("blocked", "restart")],
    "06-a-format-error-then-ok": [("task_failed", "record")],
}


def args_for(name: str) -> list[str]:
    folder = SCENARIOS / name
    if (folder / "container.log").exists():
        return [str(folder / "container.log")]
    return [str(folder / "dh.log"), "--stderr", str(folder / "stderr.log")]


def test_every_scenario_is_covered() -> None:
    assert sorted(ACTIONS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_reaches_its_expected_outcome(launch, name: str) -> None:
    expected = json.loads((SCENARIOS / name / "expected.json").read_text())
    run = launch("replay", *args_for(name), "--json")
    assert run.returncode == 0, run.stderr
    got = run.json
    assert got["ready"] is expected["ready"]
    assert [(t["code"], t["outcome"]) for t in got["tasks"]] == [(t["code"], t["outcome"]) for t in expected["tasks"]]
    assert [i["kind"] for i in got["incidents"]] == expected["incidents"]
    assert [(i["kind"], i["action"]) for i in got["incidents"]] == ACTIONS[name]
    assert got["dialect"] == ("B" if "-b-" in name else "A")


def test_a_b_stall_comes_from_the_tasks_length_far_below_heygems_600_s(launch) -> None:
    """#556: 21.48 s of audio, nothing for 600.1 s. The allowance (120 s + 10 s per audio second by default)
    restarts it 335 s after video_info; a smaller factor, sooner."""
    run = launch("replay", *args_for("02-b-no-final-result"), "--json")
    stall = run.json["incidents"][0]
    assert "21.48 s of audio" in stall["line"] and "335 s allowance" in stall["line"]
    assert stall["at"].startswith("2025-10-20 17:44:00") or stall["at"].startswith("2025-10-20 17:43:5")
    quick = launch("replay", *args_for("02-b-no-final-result"), "--json", env={"HEYGEM_TASK_SECONDS": "30"})
    assert "245 s allowance" in quick.json["incidents"][0]["line"]


def test_dead_workers_name_what_is_missing_and_ep_error_is_no_cpu_fallback(launch) -> None:
    run = launch("replay", *args_for("03-b-cuda35-workers-dead"), "--json")
    assert run.json["missing_markers"] == [
        "system ->init_wh_process module load success",
        "system ->get_aud_feat1 module load success",
        "system ->av_transfer load success",
    ]
    assert "cpu_fallback" not in [i["kind"] for i in run.json["incidents"]]


def test_people_output_names_the_dialect(launch) -> None:
    run = launch("replay", *args_for("04-b-worker-restart-stuck"))
    assert run.returncode == 0
    assert_no_traceback(run)
    assert "log dialect B" in run.stdout and "blocked      -> record" in run.stdout
