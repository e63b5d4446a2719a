"""The watchdog in the running service, with the HeyGem-like app: queue blocks, stalls and CPU fallback are
caught and acted on; the log is followed through rotation and truncation; the probes answer in each state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import gone, wait_for

SKIP_ON_CUDA = {"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider"}


@pytest.fixture
def launch_service(tmp_path: Path, ort_env: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[harness.Service] = []

    def start(**kw) -> harness.Service:  # type: ignore[no-untyped-def]
        env = {"HEYGEM_STALL_SECONDS": "3", **kw.pop("env", {})}
        service = harness.start(tmp_path, ort_env, env=env, **kw)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()


def incidents(service: harness.Service, kind: str = "*") -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_text()) for p in sorted(service.run_dir.glob(f"incident-*-{kind}.json"))]


def probe(service: harness.Service, kind: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ(HEYGEM_RUN_DIR=str(service.run_dir))
    return subprocess.run(
        [*LAUNCH, "probe", kind], env=env, cwd=service.app_dir, capture_output=True, text=True, timeout=10, check=False
    )


def test_queue_full_line_restarts_the_app_and_writes_one_snapshot(launch_service) -> None:
    service = launch_service()
    first = service.wait_app()
    service.get("/emit/progress")
    service.get("/emit/queue-full")
    second = service.wait_app(timeout=15, not_pid=first["pid"])
    assert second["pid"] != first["pid"]
    (snapshot,) = incidents(service)
    assert snapshot["kind"] == "queue_blocked"
    assert "任务视频驱动队列满" in snapshot["trigger"]
    assert any("current_idx:1" in line for line in snapshot["last_lines"])
    assert snapshot["app"]["pid"] == first["pid"]
    assert snapshot["app"]["ld_library_path"].split(":")[0].endswith("/ort/lib")
    assert snapshot["app"]["any_cuda_context"] is False
    assert snapshot["gpus"]["available"] is False and "driver" in snapshot["gpus"]["reason"]
    assert "incident queue_blocked" in service.stderr()


def test_stall_restarts_within_stall_seconds_plus_two(launch_service) -> None:
    service = launch_service()
    first = service.wait_app()
    service.get("/emit/task-start")
    for _ in range(3):
        service.get("/emit/progress")
        time.sleep(0.2)
    last_progress = time.monotonic()
    service.wait_app(timeout=15, not_pid=first["pid"])
    assert time.monotonic() - last_progress < 3 + 2
    (snapshot,) = incidents(service, "stall")
    assert "no progress for" in snapshot["trigger"]
    assert snapshot["task"]["frames_per_s"] is not None and snapshot["task"]["steps_seen"] == 3


def test_cpu_fallback_line_stops_the_app_and_exits_69(launch_service) -> None:
    service = launch_service(env={**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "600"})
    info = service.wait_app()
    pids = [info["pid"], *info["workers"]]
    assert "HEYGEM_PREFLIGHT=skip" in service.stderr()
    service.get("/emit/fallback")
    assert service.wait(timeout=20) == 69
    assert "REFUSED [provider_not_used]" in service.stderr()
    assert all(gone(pid) for pid in pids)
    assert incidents(service, "cpu_fallback")


def test_no_cuda_context_after_the_grace_exits_69(launch_service) -> None:
    """The app never touches the GPU (this machine has none): /proc shows no libcuda.so, no /dev/nvidia*."""
    service = launch_service(env={**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "1"})
    service.wait_app()
    assert service.wait(timeout=20) == 69
    assert "no process of the app holds a CUDA context 1 s after it was ready" in service.stderr()


def test_warn_mode_only_warns(launch_service) -> None:
    service = launch_service(env={**SKIP_ON_CUDA, "HEYGEM_GPU_GRACE": "1", "HEYGEM_ON_CPU_FALLBACK": "warn"})
    info = service.wait_app()
    service.get("/emit/fallback")
    wait_for(lambda: service.stderr().count("HEYGEM_ON_CPU_FALLBACK=warn") >= 1, 10, "the warning")
    time.sleep(2)
    assert service.get()["pid"] == info["pid"]
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=15) == 0


def test_restart_storm_exits_70(launch_service) -> None:
    service = launch_service(env={"HEYGEM_MAX_RESTARTS": "1"})
    first = service.wait_app()
    service.get("/emit/queue-full")
    service.wait_app(timeout=15, not_pid=first["pid"])
    service.get("/emit/failure")
    assert service.wait(timeout=20) == 70
    assert "2 restarts in 300 s (HEYGEM_MAX_RESTARTS=1): giving up" in service.stderr()


def test_log_rotated_and_truncated_mid_run_is_still_watched(launch_service) -> None:
    # Only the log file carries HeyGem's lines here, so only following it can catch them.
    service = launch_service(env={"TEST_APP_LOG_STDERR": "0"})
    log = service.app_dir / "log" / "dh.log"
    first = service.wait_app()
    os.rename(log, log.with_name("dh.log.1"))  # rotated: WatchedFileHandler reopens a new dh.log
    service.get("/emit/queue-full")
    second = service.wait_app(timeout=15, not_pid=first["pid"])
    wait_for(lambda: log.exists() and log.stat().st_size > 150, 10, "the new app to write its log")
    log.write_bytes(b"")  # truncated in place
    service.get("/emit/failure")
    service.wait_app(timeout=15, not_pid=second["pid"])
    assert [i["kind"] for i in incidents(service)] == ["queue_blocked", "task_failed"]


def test_probes_in_each_state(launch_service) -> None:
    service = launch_service(mode="slow-start", env={"TEST_APP_START_DELAY": "3"})
    wait_for(lambda: (service.run_dir / "state.json").exists(), 30, "the service to start")
    # Starting: alive, not ready.
    wait_for(lambda: probe(service, "live").returncode == 0, 10, "live")
    starting = probe(service, "ready")
    assert starting.returncode == 1 and "ready: FAIL" in starting.stdout
    # Ready.
    service.wait_app()
    wait_for(lambda: probe(service, "ready").returncode == 0, 10, "ready")
    assert probe(service, "startup").returncode == 0
    # Incident: the restarted app starts slowly, and until it is ready the incident stays open.
    service.get("/emit/queue-full")
    wait_for(lambda: "incident open: queue_blocked" in probe(service, "ready").stdout, 10, "the open incident")
    assert probe(service, "live").returncode == 0
    wait_for(lambda: probe(service, "ready").returncode == 0, 20, "ready again")
    # Stopped.
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=15) == 0
    for kind in ("live", "ready", "startup"):
        result = probe(service, kind)
        assert result.returncode == 1 and "not running" in result.stdout
