"""The watchdog in the running service, with the HeyGem-like app (tests/heygem_like_app.py, checked against
HeyGem's real lines by tests/watch/test_stand_in.py), time compressed: real supervisord, real processes, real
ONNX Runtime for the per-process guard. What issue 7 asks to show, case by case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from launcher.system import ports, procs
from launcher.watch.heygem_log import parse_record
from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.conftest import WATCH_STALL_SECONDS as STALL
from tests.harness import gone, wait_for
from tests.stubelf import make_loadable

SKIP_ON_CUDA = {"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider"}


def incidents(service: harness.Service, kind: str = "*") -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_text()) for p in sorted(service.run_dir.glob(f"incident-*-{kind}.json"))]


def probe(service: harness.Service, kind: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ(HEYGEM_RUN_DIR=str(service.run_dir))
    return subprocess.run(
        [*LAUNCH, "probe", kind], env=env, cwd=service.app_dir, capture_output=True, text=True, timeout=10, check=False
    )


def ready(service: harness.Service, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    info = service.wait_app(timeout=timeout)
    wait_for(lambda: probe(service, "ready").returncode == 0, timeout, "probe ready to pass")
    return info


def task(service: harness.Service, **params: object) -> dict:  # type: ignore[type-arg]
    answer = service.get(f"/task?{urlencode(params)}")
    assert answer is not None
    return answer


def task_state(service: harness.Service, code: str) -> str | None:
    for t in service.get("/tasks") or []:
        if t["code"] == code:
            return t["state"]
    return None


def last_record_time(service: harness.Service, text: str) -> float:
    """When the app logged its last record containing `text` (the log file's copy, milliseconds)."""
    lines = (service.app_dir / "log" / "dh.log").read_text().splitlines()
    record = parse_record(next(line for line in reversed(lines) if text in line))
    assert record is not None
    return record.at


def test_tasks_that_end_normally_never_restart_the_app(launch_service) -> None:
    """Issue 7 #1: the final encode writes nothing, longer than the stall time; a long task too."""
    service = launch_service()
    info = ready(service)
    task(service, code="short", frames=40, fps=40, encode=STALL + 1.5)
    task(service, code="long", frames=400, fps=100, encode=STALL + 2.5, pingpong=1)
    wait_for(lambda: task_state(service, "long") == "done", 30, "both tasks to end")
    time.sleep(0.5)
    assert service.get()["pid"] == info["pid"]  # type: ignore[index]
    assert incidents(service) == []
    state = json.loads((service.run_dir / "state.json").read_text())
    assert [(t["code"], t["outcome"], t["frames"]) for t in state["tasks"]] == [
        ("short", "done", 40),
        ("long", "done", 400),
    ]


def test_queue_full_line_restarts_the_app_within_a_second(launch_service) -> None:
    service = launch_service(env={"TEST_APP_BLOCK_SECONDS": "20"})  # 1 s at speed 20, under the stall time
    first = ready(service)
    task(service, code="seed", kind="blocked", frames=60)
    second = service.wait_app(timeout=15, not_pid=first["pid"])
    logged = last_record_time(service, "任务视频驱动队列满")
    started = procs.start_time(second["pid"])
    assert started is not None and started - logged < 1.0
    (snapshot,) = incidents(service)
    assert snapshot["kind"] == "blocked" and snapshot["action"] == "restart"
    assert "[seed]任务视频驱动队列满" in snapshot["trigger"]
    assert snapshot["task"]["code"] == "seed" and snapshot["app"]["pid"] == first["pid"]
    assert os.path.getsize(sorted(service.run_dir.glob("incident-*.json"))[0]) < 1_000_000


def test_frames_that_stop_restart_within_the_stall_time_and_the_rate_is_true(launch_service) -> None:
    service = launch_service(env={"TEST_APP_BLOCK_SECONDS": "200"})  # HeyGem's 60 s put, well after the stall
    first = ready(service)
    task(service, code="stuck", kind="stall", frames=200, fps=40)
    second = service.wait_app(timeout=20, not_pid=first["pid"])
    last_progress = last_record_time(service, "发送完成数据大小")
    started = procs.start_time(second["pid"])
    assert started is not None and started - last_progress < STALL + 1
    (snapshot,) = incidents(service)
    assert snapshot["kind"] == "stall" and snapshot["task"]["frames"] == 100
    assert snapshot["task"]["fps"] == pytest.approx(40, rel=0.10), "frames/s within 10% of the app's true rate"


def test_a_failed_task_that_ends_is_one_snapshot_and_the_same_app(launch_service) -> None:
    service = launch_service()
    info = ready(service)
    task(service, code="bad-video", kind="fail")
    task(service, code="oom", kind="writer-fail", frames=40, fps=80)
    task(service, code="next", frames=20, fps=80, encode=0.2)
    wait_for(lambda: task_state(service, "next") == "done", 20, "the next task to succeed")
    time.sleep(STALL + 0.5)  # past the time a failed task has to end
    assert service.get()["pid"] == info["pid"]  # type: ignore[index]
    assert [(i["kind"], i["action"], i["task"]["code"]) for i in incidents(service)] == [
        ("task_failed", "record", "bad-video"),
        ("task_failed", "record", "oom"),
    ]


def test_a_failed_task_that_never_ends_has_hung_and_is_restarted(launch_service) -> None:
    service = launch_service()
    first = ready(service)
    task(service, code="stuck", kind="fail-hang")
    service.wait_app(timeout=20, not_pid=first["pid"])
    assert [i["kind"] for i in incidents(service)] == ["task_failed", "stall"]


def test_user_text_with_failure_words_does_nothing(launch_service) -> None:
    service = launch_service()
    info = ready(service)
    task(
        service,
        code="u1",
        audio="./temp/队列满_任务视频驱动队列满，严重阻塞.wav",
        video="./temp/任务执行失败.mp4",
        frames=20,
        fps=80,
    )
    wait_for(lambda: task_state(service, "u1") == "done", 20, "the task to end")
    time.sleep(0.5)
    assert service.get()["pid"] == info["pid"] and incidents(service) == []  # type: ignore[index]


def test_one_incident_per_event_over_20_episodes(launch_service) -> None:
    """Each queue-full record arrives twice (log file and stderr) and the dying app logs it once more while it
    stops: one snapshot and one restart per episode, never a second restart of the fresh app."""
    # No backoff (HEYGEM_RESTART_DELAY=0): 20 restarts in a row would otherwise wait up to 60 s each.
    service = launch_service(mode="noisy-stop", env={"HEYGEM_MAX_RESTARTS": "100", "HEYGEM_RESTART_DELAY": "0"})
    pid = ready(service)["pid"]
    for episode in range(20):
        service.get("/emit/queue-full")  # a task starts and blocks; while stopping, the app logs it again
        pid = service.wait_app(timeout=15, not_pid=pid)["pid"]
        wait_for(lambda: probe(service, "ready").returncode == 0, 15, f"ready after episode {episode}")
    time.sleep(1)
    assert len(incidents(service)) == 20
    assert json.loads((service.run_dir / "state.json").read_text())["restarts"] == 20
    assert service.get()["pid"] == pid  # type: ignore[index]


def test_ready_without_any_help_from_stdout(launch_service) -> None:
    """Issue 7 #2: Gradio's URL is an unflushed print; readiness needs the workers' markers and the port."""
    service = launch_service(env={"TEST_APP_STDOUT": "held", "TEST_APP_WORKER_DELAY": "3"})
    service.wait_app()

    def missing() -> str | None:
        answer = probe(service, "ready")
        return answer.stdout if answer.returncode == 1 and "not logged yet" in answer.stdout else None

    assert ">>> 数字人图片处理进程启动" in wait_for(missing, 10, "probe ready to name what is missing")
    ready(service)
    assert "Running on local URL" not in service.stdout()


def test_pythonunbuffered_by_default_and_a_users_value_wins(launch_service, tmp_path: Path) -> None:
    service = launch_service(env={"PYTHONUNBUFFERED": None})  # not inherited: the launcher's default
    assert ready(service)["env"]["PYTHONUNBUFFERED"] == "1"
    wait_for(lambda: "Running on local URL" in service.stdout(), 10, "the app's print to arrive at once")
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=15) == 0
    other = launch_service(env={"PYTHONUNBUFFERED": ""})
    assert "PYTHONUNBUFFERED" not in {k for k, v in ready(other)["env"].items() if v}


def test_a_busy_port_is_refused_naming_its_holder(launch_service) -> None:
    """Gradio would silently take the next port, and every probe would watch the wrong one."""
    port = harness.free_port()
    holder = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)])
    try:
        wait_for(lambda: any(h.pid == holder.pid for h in ports.holders(port)), 10, "the holder to listen")
        service = launch_service(env={"GRADIO_SERVER_PORT": str(port)})
        assert service.wait(timeout=30) == 78
        err = service.stderr()
        assert f"port {port}" in err and f"pid {holder.pid}" in err and "http.server" in err
        assert "Traceback" not in err and not (service.run_dir / "supervisord.pid").exists()
    finally:
        holder.kill()
        holder.wait()


def test_onnxruntime_on_the_cpu_beside_a_cuda_context_exits_69(launch_service) -> None:
    """Issue 7 #4: torch's CUDA context (libcuda.so.1 mapped) says nothing about ONNX Runtime; a process that
    maps the real ONNX Runtime without its CUDA provider runs it on the CPU."""
    service = launch_service(
        env={**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "1", "TEST_APP_ORT": "cpu", "TEST_APP_TORCH": "1"}
    )
    info = service.wait_app()
    pids = [info["pid"], *info["workers"]]
    assert service.wait(timeout=30) == 69
    err = service.stderr()
    assert "REFUSED [provider_not_used]" in err and "map ONNX Runtime but not libonnxruntime_providers_cuda.so" in err
    (snapshot,) = incidents(service, "cpu_fallback")
    processes = {p["pid"]: p for p in snapshot["app"]["processes"]}
    assert set(snapshot["app"]["onnxruntime_on_cpu"]) >= {info["pid"]}
    assert all(processes[p]["cuda_context"] for p in snapshot["app"]["onnxruntime_on_cpu"]), "torch's context"
    assert all(gone(pid) for pid in pids)


def test_the_real_cuda_provider_mapped_passes_the_guard(launch_service, tmp_path: Path) -> None:
    """The passing case: every process loads the real libonnxruntime_providers_cuda.so (against stand-in CUDA
    libraries: no CPU machine has CUDA), as on a working GPU install. /proc shows it for real."""
    import onnxruntime

    provider = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    stubs = tmp_path / "stand-in-cuda"
    if make_loadable(provider, stubs) is None:
        pytest.skip("no C compiler to make stand-in CUDA libraries")
    env = {**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "1", "TEST_APP_ORT": "cuda", "HEYGEM_EXTRA_LIBRARY_PATH": str(stubs)}
    service = launch_service(env=env)
    info = ready(service)
    time.sleep(2.5)  # past the grace
    assert service.get()["pid"] == info["pid"] and incidents(service) == []  # type: ignore[index]
    maps = Path(f"/proc/{info['pid']}/maps").read_text()
    assert "libonnxruntime_providers_cuda.so" in maps


def test_onnxruntimes_own_fallback_line_stops_the_app(launch_service) -> None:
    service = launch_service(env={**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "600"})
    info = ready(service)
    pids = [info["pid"], *info["workers"]]
    service.get("/emit/ep-error")  # the Python layer's print, on stdout: PYTHONUNBUFFERED brings it at once
    assert service.wait(timeout=20) == 69
    # The decisive line: `EP Error` alone precedes any retry, also one on CUDA again (issue 17).
    assert "REFUSED [provider_not_used]" in service.stderr()
    assert "Falling back to ['CPUExecutionProvider']" in service.stderr()
    assert all(gone(pid) for pid in pids)


def test_warn_mode_only_warns(launch_service) -> None:
    service = launch_service(env={**SKIP_ON_CUDA, "HEYGEM_ON_CPU_FALLBACK": "warn"})
    info = ready(service)
    service.get("/emit/fallback")
    wait_for(lambda: "HEYGEM_ON_CPU_FALLBACK=warn" in service.stderr(), 10, "the warning")
    time.sleep(1)
    assert service.get()["pid"] == info["pid"]  # type: ignore[index]
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=15) == 0


def test_restart_storm_exits_70(launch_service) -> None:
    service = launch_service(env={"HEYGEM_MAX_RESTARTS": "1"})
    first = ready(service)
    service.get("/emit/queue-full")
    service.wait_app(timeout=15, not_pid=first["pid"])
    ready(service)
    service.get("/emit/queue-full")
    assert service.wait(timeout=20) == 70
    assert "2 restarts in 300 s (HEYGEM_MAX_RESTARTS=1): giving up" in service.stderr()


def test_log_rotated_and_truncated_mid_run_is_still_watched(launch_service) -> None:
    # Only the log file carries HeyGem's lines here, so only following it can catch them.
    service = launch_service(env={"TEST_APP_LOG_STDERR": "0"})
    log = service.app_dir / "log" / "dh.log"
    first = ready(service)
    os.rename(log, log.with_name("dh.log.1"))  # rotated: WatchedFileHandler reopens a new dh.log
    service.get("/emit/queue-full")
    second = service.wait_app(timeout=15, not_pid=first["pid"])
    ready(service)
    log.write_bytes(b"")  # truncated in place
    service.get("/emit/queue-full")
    service.wait_app(timeout=15, not_pid=second["pid"])
    assert [i["kind"] for i in incidents(service)] == ["blocked", "blocked"]


def test_an_earlier_runs_output_does_not_restart_the_fresh_app(launch_service, tmp_path: Path) -> None:
    """Issue 8 #7: the run dir survives `docker restart`; its app.log holds the previous run's queue-full line."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    line = "[2025-11-09 17:21:27] [process.py[line:108]] [ERROR] [[7]任务视频驱动队列满，严重阻塞，下游队列异常]\n"
    (run_dir / "app.log").write_text(line * 3)
    service = launch_service()
    info = ready(service)
    time.sleep(1)
    assert service.get()["pid"] == info["pid"] and incidents(service) == []  # type: ignore[index]


def test_probes_in_each_state(launch_service) -> None:
    service = launch_service(mode="slow-start", env={"TEST_APP_START_DELAY": "3"})
    wait_for(lambda: (service.run_dir / "state.json").exists(), 30, "the service to start")
    # Starting: alive, not ready.
    wait_for(lambda: probe(service, "live").returncode == 0, 10, "live")
    starting = probe(service, "ready")
    assert starting.returncode == 1 and "ready: FAIL" in starting.stdout
    # Ready.
    ready(service)
    assert probe(service, "startup").returncode == 0
    # Incident: the restarted app starts slowly, and until it is ready the incident stays open.
    service.get("/emit/queue-full")
    wait_for(lambda: "incident open: blocked" in probe(service, "ready").stdout, 10, "the open incident")
    assert probe(service, "live").returncode == 0
    wait_for(lambda: probe(service, "ready").returncode == 0, 20, "ready again")
    # Stopped.
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=15) == 0
    for kind in ("live", "ready", "startup"):
        result = probe(service, kind)
        assert result.returncode == 1 and "not running" in result.stdout
