"""`heygem-launch doctor` on this machine (no driver): with no service, with a service, with an app started by
hand, as in the original incident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import APP, free_port, wait_for


def doctor(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAUNCH, "doctor", *args],
        env=clean_environ(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


OLD_FAILURE = "[2025-11-09 17:20:13,711] [app.py[line:210]] [ERROR] [[a6]任务执行失败，异常信息:[format video error]]\n"
USER_TEXT = (
    "[2025-11-09 17:29:40,294] [app.py[line:210]] [INFO] [任务:9 -> audio_url:./队列满_GPU.wav  video_url:./v.mp4]\n"
)
BLOCKED = "[2025-11-09 17:30:40,324] [process.py[line:108]] [ERROR] [[9]任务视频驱动队列满，严重阻塞，下游队列异常]\n"


def test_without_a_service_says_there_is_no_driver_and_reports_the_rest(app_dir: Path, ort_env: Path) -> None:
    (app_dir / "log").mkdir()
    (app_dir / "log" / "dh.log").write_text(OLD_FAILURE + USER_TEXT + BLOCKED)
    result = doctor(app_dir, HEYGEM_CONDA_ENV=str(ort_env), HEYGEM_RUN_DIR=str(app_dir.parent / "run"))
    assert result.returncode == 69, result.stderr
    out = result.stdout
    assert "none: no NVIDIA driver: libnvidia-ml.so.1 not found" in out
    assert "no heygem-launch runs with run dir" in out
    assert "REFUSED [cuda_libraries_missing]" in out
    assert "task_failed 1, blocked 1" in out and "no app running: the log's tail" in out
    assert "队列满_GPU.wav" not in out, "an INFO line with user text is not a warning"
    assert out.strip().splitlines()[-1].startswith("Conclusion: the preflight refuses [cuda_libraries_missing]")
    doc = json.loads(
        doctor(app_dir, "--json", HEYGEM_CONDA_ENV=str(ort_env), HEYGEM_RUN_DIR=str(app_dir.parent / "run")).stdout
    )
    assert doc["problem"] is True and doc["gpus"]["available"] is False
    assert doc["preflight"]["cause"] == "cuda_libraries_missing"
    assert doc["log"]["counts"] == {"task_failed": 1, "blocked": 1}


def test_with_a_service_reads_the_running_apps_real_environment(tmp_path: Path, ort_env: Path) -> None:
    service = harness.start(
        tmp_path,
        ort_env,
        env={
            "HEYGEM_PREFLIGHT": "skip",
            "HEYGEM_GPU_GRACE": "600",
            "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider",
            "TEST_APP_ORT": "cpu",
            "TEST_APP_TORCH": "1",
        },
    )
    # The HeyGem repo ships a log with old failures: they are not this app's.
    (service.app_dir / "log").mkdir()
    (service.app_dir / "log" / "dh.log").write_text(OLD_FAILURE)
    try:
        info = service.wait_app()
        wait_for(lambda: Path(f"/proc/{info['pid']}/maps").read_text().count("onnxruntime") > 0, 20, "ORT loaded")
        service.get("/emit/failure")
        result = doctor(
            service.app_dir,
            "--json",
            HEYGEM_CONDA_ENV=str(ort_env),
            HEYGEM_APP_COMMAND=f"python {APP}",  # the preflight checks the app command
            HEYGEM_RUN_DIR=str(service.run_dir),
        )
        doc = json.loads(result.stdout)
        assert doc["service"]["running"] is True and doc["app"]["pid"] == info["pid"]
        real = Path(f"/proc/{info['pid']}/environ").read_bytes().decode()
        assert f"LD_LIBRARY_PATH={doc['app']['environment']['LD_LIBRARY_PATH']}\0" in real
        assert doc["app"]["cuda_context"] is True and len(doc["app"]["processes"]) >= 3  # torch's, here a stand-in
        assert info["pid"] in doc["app"]["onnxruntime_on_cpu"]
        assert doc["conclusion"].startswith(f"the running app (pid {info['pid']}) runs ONNX Runtime on the CPU")
        assert "says nothing about ONNX Runtime" in doc["conclusion"] and "cuda_libraries_missing" in doc["conclusion"]
        assert doc["log"]["counts"] == {"task_failed": 1}, "only the lines since the app started"
        assert "stand-in failure" in doc["log"]["lines"][0]
    finally:
        service.signal(signal.SIGTERM)
        service.wait(timeout=15)
        service.cleanup()


def test_finds_an_app_started_by_hand(app_dir: Path, ort_env: Path) -> None:
    """The incident's setup: `python app.py` started from a shell, no launcher."""
    port = free_port()
    env = clean_environ(GRADIO_SERVER_PORT=str(port), PATH=f"{ort_env}/bin:{os.environ['PATH']}", TEST_APP_ORT="cpu")
    app = subprocess.Popen(
        ["python", str(APP)],
        cwd=app_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: harness.get(port) is not None, 20, "the app")
        wait_for(lambda: "onnxruntime" in Path(f"/proc/{app.pid}/maps").read_text(), 20, "ORT loaded")
        result = doctor(
            app_dir,
            "--json",
            HEYGEM_CONDA_ENV=str(ort_env),
            HEYGEM_APP_COMMAND=f"python {APP}",
            HEYGEM_RUN_DIR=str(app_dir.parent / "run"),
        )
        doc = json.loads(result.stdout)
        assert doc["service"]["app_started_by_hand"] == app.pid
        assert "LD_LIBRARY_PATH" not in doc["app"]["environment"]  # started by hand, as in the incident
        assert doc["conclusion"].startswith(f"the running app (pid {app.pid}) runs ONNX Runtime on the CPU")
    finally:
        os.killpg(app.pid, signal.SIGKILL)
        app.wait()


def test_a_blocked_queue_without_a_gpu_is_not_blamed_on_a_busy_gpu(launch_service) -> None:  # type: ignore[no-untyped-def]
    """A newcomer's find: with no GPU here, doctor said "the queue blocked with the GPU in use"."""
    # Doctor counts HeyGem's records since the running app's start (1 s of slack: they have whole seconds), and the
    # blocked record is the replaced app's: without the restart backoff it falls within that second.
    svc = launch_service(env={"HEYGEM_RESTART_DELAY": "0"})
    first = svc.wait_app()
    wait_for(lambda: json.loads(harness.control(svc, "status", "--json").stdout)["ready"], 30, "the app ready")
    svc.get("/emit/queue-full")
    svc.wait_app(not_pid=first["pid"])
    run = harness.control(svc, "doctor", "--json")
    conclusion = json.loads(run.stdout)["conclusion"]
    assert run.returncode == 69 and "no GPU is visible here" in conclusion and "in use" not in conclusion


def test_a_service_started_without_the_preflight_is_said_to_be(launch_service) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_PREFLIGHT=skip with CUDA required. Bug: doctor said nothing of the service's skipped preflight.
    Should: the service's preflight reads skipped; the fresh one, a real check, refuses here."""
    svc = launch_service(
        env={"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider", "HEYGEM_GPU_GRACE": "600"}
    )
    svc.wait_app()
    wait_for(lambda: json.loads(harness.control(svc, "status", "--json").stdout)["ready"], 30, "the app ready")
    text = harness.control(svc, "doctor").stdout
    assert "the service's last preflight: skipped (HEYGEM_PREFLIGHT=skip)" in text, text
    assert "passed" not in text
    doc = json.loads(harness.control(svc, "doctor", "--json").stdout)
    assert (doc["service"]["preflight"]["result"], doc["service"]["preflight"]["ok"]) == ("skipped", None)
    assert (doc["preflight"]["result"], doc["preflight"]["ok"]) == ("refused", False)
