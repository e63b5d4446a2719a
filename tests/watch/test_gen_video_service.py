"""The watchdog in the running service in front of HeyGem.ai's gen-video service (log dialect B), with its stand-in
(tests/gen_video_like_app.py, checked against tests/scenarios/duix-replay by test_gen_video_stand_in.py), time
compressed: real supervisord, real processes, real HTTP on the service's own API. What issue 17 asks to show."""

from __future__ import annotations

import calendar
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from launcher.watch.heygem_log import parse_record
from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import wait_for

GEN_VIDEO = Path(__file__).resolve().parent.parent / "gen_video_like_app.py"
B_WORKERS = [
    "system ->init_wh_process module load success",
    "system ->get_aud_feat1 module load success",
    "system ->av_transfer load success",
]


class GenVideo:
    """heygem-launch with the gen-video stand-in as its app, on a port of its own (the service reads it from
    `config/config.ini`, as the real one does)."""

    def __init__(self, launch_service: Any, tmp_path: Path, env: dict[str, str], config_port: int | None = None):
        self.port = harness.free_port()
        app_dir = tmp_path / "app"
        (app_dir / "config").mkdir(parents=True)
        (app_dir / "config" / "config.ini").write_text(f"[http_server]\nserver_port = {config_port or self.port}\n")
        self.service: harness.Service = launch_service(
            env={"HEYGEM_APP_COMMAND": f"python {GEN_VIDEO}", "HEYGEM_APP_PORT": str(self.port), **env}
        )

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        self.service.assert_alive()
        answer = self.call("/pid")
        return answer["pid"] if answer else None

    def submit(self, code: str, **test: Any) -> None:
        body = {"audio_url": f"{code}.wav", "video_url": "avatar.mp4", "code": code, "chaofen": 0, "pn": 1}
        answer = self.call("/easy/submit", {**body, **test})
        assert answer is not None and answer["code"] == 10000, answer

    def probe(self, kind: str = "ready") -> subprocess.CompletedProcess[str]:
        env = clean_environ(HEYGEM_RUN_DIR=str(self.service.run_dir))
        run = [*LAUNCH, "probe", kind]
        return subprocess.run(run, env=env, capture_output=True, text=True, timeout=10, check=False)

    def state(self) -> dict[str, Any]:
        return json.loads((self.service.run_dir / "state.json").read_text())

    def output(self) -> list[str]:
        return (self.service.run_dir / "app.log").read_text(errors="replace").splitlines()

    def record_at(self, text: str) -> float:
        record = parse_record(next(line for line in self.output() if text in line))
        assert record is not None and record.dialect == "B"
        return record.at

    def incidents(self) -> list[tuple[str, str, float]]:
        """(kind, action, when) of each snapshot, the time from its file name (UTC, milliseconds)."""
        found = []
        for path in sorted(self.service.run_dir.glob("incident-*.json")):
            stamp = path.name.split("-")[1]
            at = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S")) + float("0" + stamp[15:])
            data = json.loads(path.read_text())
            found.append((data["kind"], data["action"], at))
        return found


def ready(app: GenVideo, timeout: float = 30) -> int:
    wait_for(lambda: app.probe().returncode == 0, timeout, "probe ready to pass")
    pid = app.pid()
    assert pid is not None
    return pid


def test_ready_only_after_the_three_worker_markers_and_the_api(launch_service, tmp_path: Path) -> None:
    """The av_transfer worker loads for 4 s, past the service's 15-s sleep (0.75 s here): Flask answers 10004 long
    before, and that alone is not readiness (#471, #526). Before issue 17 no B record was read: never ready."""
    app = GenVideo(launch_service, tmp_path, {"TEST_GENVIDEO_LOAD_SECONDS": "0.2,0.3,4"})
    wait_for(lambda: (app.call("/easy/query?code=x") or {}).get("code") == 10004, 20, "Flask to answer 10004")

    # Until supervisord calls the app RUNNING (HEYGEM_START_SECONDS) the probe's reason is that; then the marker.
    def naming_the_marker() -> subprocess.CompletedProcess[str] | None:
        answer = app.probe()
        assert answer.returncode == 1, answer.stdout  # never ready while the av_transfer worker loads
        return answer if "system ->av_transfer load success" in answer.stdout else None

    early = wait_for(naming_the_marker, 3, "probe ready to name the missing marker")
    assert early.returncode == 1 and "system ->av_transfer load success" in early.stdout, early.stdout
    assert "init_wh_process module load success" not in early.stdout
    ready(app)
    passed_at = time.time()
    assert app.record_at("system ->av_transfer load success") <= passed_at
    assert app.state()["instances"][0]["dialect"] == "B"
    assert "GET /easy/query?code=heygem-launch-probe" in app.probe().stdout


def test_markers_without_the_api_on_its_port_are_not_ready(launch_service, tmp_path: Path) -> None:
    """Every marker logged, but the service listens where config.ini says, not on HEYGEM_APP_PORT: the probe asks
    the API and says so."""
    app = GenVideo(launch_service, tmp_path, {}, config_port=harness.free_port())
    state = app.service.run_dir / "state.json"
    wait_for(lambda: state.exists() and app.state().get("ready"), 20, "every marker")
    time.sleep(1.0)
    answer = app.probe()
    assert answer.returncode == 1 and f"port {app.port} does not answer GET /easy/query" in answer.stdout, answer.stdout


def test_a_task_that_hangs_with_no_end_line_is_restarted_within_its_allowance(launch_service, tmp_path: Path) -> None:
    """No B line between video_info and the end: the allowance from the task's length (2 + 0.5 x 2 s of audio
    = 3 s) is the only clock, far below HeyGem's own 600 s (#471: 611 s at 5 %, again and again)."""
    env = {"HEYGEM_TASK_SECONDS": "2", "HEYGEM_TASK_SECONDS_PER_AUDIO_SECOND": "0.5", "TEST_GENVIDEO_TIMEOUT": "99999"}
    app = GenVideo(launch_service, tmp_path, env)
    first = ready(app)
    app.submit("hang-1", test_kind="hang", test_audio_seconds=2)
    wait_for(lambda: app.pid() not in (None, first), 20, "a new app process")
    (kind, action, at), *_ = app.incidents()
    assert (kind, action) == ("stall", "restart")
    assert 3.0 <= at - app.record_at("hang-1 -> video_info") <= 3.0 + 1.0


def test_workers_dead_at_start_are_never_ready(launch_service, tmp_path: Path) -> None:
    """CUDA failure 35 kills init_wh and av_transfer (#592): Flask answers, the probe names the markers that never
    came, and ONNX Runtime's `EP Error` print is no CPU fallback (its retry was on CUDA and failed too)."""
    app = GenVideo(launch_service, tmp_path, {"TEST_GENVIDEO_WORKERS": "dead"})
    wait_for(lambda: (app.call("/easy/query?code=x") or {}).get("code") == 10004, 20, "Flask to answer 10004")
    wait_for(lambda: any("Found no NVIDIA driver" in line for line in app.output()), 10, "the worker's traceback")
    time.sleep(1.0)
    answer = app.probe()
    assert answer.returncode == 1, answer.stdout
    assert "system ->init_wh_process module load success" in answer.stdout
    assert "system ->av_transfer load success" in answer.stdout
    assert app.state()["ready"] is False and app.incidents() == []
    app.service.assert_alive()


def test_a_normal_task_keeps_the_same_app(launch_service, tmp_path: Path) -> None:
    app = GenVideo(launch_service, tmp_path, {"HEYGEM_TASK_SECONDS": "2", "HEYGEM_TASK_SECONDS_PER_AUDIO_SECOND": "0"})
    first = ready(app)
    app.submit("ok-1", test_kind="ok", test_seconds=1.0, test_audio_seconds=1)
    wait_for(lambda: (app.call("/easy/query?code=ok-1") or {}).get("data", {}).get("status") == 2, 10, "the task")
    time.sleep(2.5)  # past its allowance had it not ended
    assert app.pid() == first and app.incidents() == []
    wait_for(lambda: [t["outcome"] for t in app.state()["tasks"]] == ["done"], 5, "the task in the state file")


def test_heygems_own_timeout_restarts_the_app(launch_service, tmp_path: Path) -> None:
    """`任务执行失败…[no final result]`: the workers are gone and every later task would hang the same
    way: a restart, not a record (before issue 17: nothing, the line was not even read)."""
    app = GenVideo(launch_service, tmp_path, {"HEYGEM_TASK_SECONDS": "3600", "TEST_GENVIDEO_TIMEOUT": "40"})
    first = ready(app)
    app.submit("late-1", test_kind="hang")
    wait_for(lambda: app.pid() not in (None, first), 20, "a new app process")
    assert [(k, a) for k, a, _ in app.incidents()] == [("task_failed", "restart")]


def test_heygems_own_worker_restart_is_recorded_then_restarts_when_it_repeats(launch_service, tmp_path: Path) -> None:
    """`<c> ->av_transfer maybe blocked, restart...` is HeyGem healing itself: recorded. Again within
    HEYGEM_WORKER_RESTART_WINDOW it is not healing (#481): restart."""
    env = {"HEYGEM_TASK_SECONDS": "3600", "TEST_GENVIDEO_BLOCK_SECONDS": "30"}
    app = GenVideo(launch_service, tmp_path, env)
    first = ready(app)
    app.submit("stuck-1", test_kind="self-restart")
    wait_for(lambda: app.pid() not in (None, first), 30, "a new app process")
    assert [(k, a) for k, a, _ in app.incidents()] == [("blocked", "record"), ("blocked", "restart")]


def test_doctor_reads_dialect_b_from_the_output(launch_service, tmp_path: Path) -> None:
    """B writes no log file: `doctor` finds HeyGem's own records in the captured output. Dead workers, a task that
    HeyGem gives up on after its own timeout (recorded, not restarted: the workers never loaded)."""
    env = {"TEST_GENVIDEO_WORKERS": "dead", "TEST_GENVIDEO_TIMEOUT": "20", "HEYGEM_TASK_SECONDS": "3600"}
    app = GenVideo(launch_service, tmp_path, env)
    wait_for(lambda: (app.call("/easy/query?code=x") or {}).get("code") == 10004, 20, "Flask to answer 10004")
    app.submit("given-up", test_kind="hang")
    wait_for(lambda: any("[no final result]" in line for line in app.output()), 10, "HeyGem's own timeout")
    time.sleep(0.5)
    assert [(k, a) for k, a, _ in app.incidents()] == [("task_failed", "record")]
    env_of = clean_environ(HEYGEM_RUN_DIR=str(app.service.run_dir))
    run = subprocess.run([*LAUNCH, "doctor", "--json"], env=env_of, capture_output=True, text=True, timeout=120)
    assert run.returncode == 69, run.stderr
    report = json.loads(run.stdout)
    assert report["log"]["counts"].get("heygem_timeout") == 1, report["log"]
    assert "HeyGem gave up on a task" in report["conclusion"] and "never said they loaded" in report["conclusion"]
