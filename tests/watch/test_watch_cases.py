"""Cases a tester found by trying the running service with the HeyGem-like app (time compressed), and
doctor's log summary: each failed before its fix."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.commands.doctor import scan_log
from launcher.config.settings import build_settings
from launcher.system import ports
from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import wait_for
from tests.watch.test_watch_service import incidents, probe, ready, task, task_state


def test_a_task_code_with_a_space_that_ends_does_not_restart_the_app(launch_service) -> None:
    """A caller-picked code `job 1` (HeyGem.ai's /easy/submit takes any string): HeyGem logs
    `>>> 任务:job 1 耗时:…`, the end pattern `^>>> 任务:\\S+ 耗时:` misses it, and once the encode allowance
    runs out the healthy app is restarted. (Encode allowance shortened to 4 s, a documented setting.)"""
    service = launch_service(env={"HEYGEM_ENCODE_SECONDS": "4", "HEYGEM_ENCODE_SECONDS_PER_FRAME": "0"})
    info = ready(service)
    task(service, code="job 1", frames=40, fps=40, encode=1)
    wait_for(lambda: task_state(service, "job 1") == "done", 30, "the task to end")
    time.sleep(6)  # past the 4 s allowance
    assert service.get()["pid"] == info["pid"], "the app was restarted"  # type: ignore[index]
    assert incidents(service) == []


def control(service: harness.Service, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ(
        HEYGEM_RUN_DIR=str(service.run_dir), HEYGEM_ENV_FILE=str(env_file), HEYGEM_APP_DIR=str(service.app_dir)
    )
    return subprocess.run([*LAUNCH, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_restart_onto_a_busy_port_is_refused(launch_service, tmp_path: Path) -> None:
    """README: 'If something already listens on the app's port, heygem-launch refuses to start (exit 78…):
    Gradio would silently take the next port and every probe would watch the wrong one.' Checked at the
    first start only: `heygem-launch restart` after HEYGEM_APP_PORT was changed in .env to a busy port
    restarts the app, which moves to another port, and `probe ready` fails for ever."""
    env_file = tmp_path / "heygem.env"
    env_file.write_text("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\n")
    service = launch_service(env={"HEYGEM_ENV_FILE": str(env_file), "HEYGEM_REQUIRE_PROVIDER": None})
    info = ready(service)
    busy = harness.free_port()
    holder = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(busy)])
    try:
        wait_for(lambda: any(h.pid == holder.pid for h in ports.holders(busy)), 10, "the holder to listen")
        env_file.write_text(f"HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nHEYGEM_APP_PORT={busy}\n")
        result = control(service, env_file, "restart")
        assert result.returncode == 78 and f"port {busy}" in (result.stdout + result.stderr), (
            result.returncode,
            result.stdout[-400:],
            result.stderr[-400:],
            probe(service, "ready").stdout,
        )
        assert service.get()["pid"] == info["pid"]  # type: ignore[index]
    finally:
        holder.kill()
        holder.wait()


def test_doctor_counts_onnxruntime_fallback_lines_only_since_the_apps_start(tmp_path: Path) -> None:
    """The run dir (and RUN_DIR/app.log, the app's captured output) outlives the app's restarts. A fallback
    line from an earlier run, stamped before the current app started, is still counted, and doctor concludes
    'the running app runs ONNX Runtime on the CPU: ONNX Runtime logged its fallback'. The dh.log records are
    filtered by the app's start; ONNX Runtime's lines carry their own time and are not."""
    log = tmp_path / "dh.log"
    log.write_text("[2025-11-09 17:20:00,000] [app.py[line:159]] [INFO] [TransDhTask init]\n")
    output = tmp_path / "app.log"
    output.write_text(
        "2025-11-09 16:00:00.000000123 [E:onnxruntime:Default, provider_bridge_ort.cc:1193 TryGetProviderInfo_CUDA] "
        "Failed to load library libonnxruntime_providers_cuda.so with error: libcudnn.so.8: cannot open shared "
        "object file: No such file or directory\n"
    )
    settings = build_settings({}, {"HEYGEM_APP_LOG": str(log)}, {}, cwd=tmp_path)
    since = time.mktime(time.strptime("2025-11-09 17:20:00", "%Y-%m-%d %H:%M:%S"))  # the app's start
    found = scan_log(settings, since, output)
    assert found["counts"].get("onnxruntime_fallback", 0) == 0, found


def test_doctor_reads_the_apps_times_in_the_apps_time_zone(tmp_path: Path, ort_env: Path) -> None:
    """HeyGem stamps its records in its own local time. A TZ line in heygem-launch's .env goes to the app only
    (its non-HEYGEM keys are the app's), so the app writes Asia/Shanghai times while doctor parses them in the
    launcher's zone (UTC here): a failure logged an hour before the app started looks 7 h newer and is shown
    as this app's. (The watchdog's instance fence has the same blind spot: it gives up beyond 300 s.)"""
    import json

    from tests.commands.test_doctor import doctor

    env_file = tmp_path / "heygem.env"
    env_file.write_text("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nTZ=Asia/Shanghai\n")
    (tmp_path / "app" / "log").mkdir(parents=True)
    an_hour_ago_in_shanghai = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600 - 3600))
    (tmp_path / "app" / "log" / "dh.log").write_text(
        f"[{an_hour_ago_in_shanghai},000] [app.py[line:210]] [ERROR] [[old]任务执行失败，异常信息:[earlier run]]\n"
    )
    service = harness.start(
        tmp_path, ort_env, env={"HEYGEM_ENV_FILE": str(env_file), "HEYGEM_REQUIRE_PROVIDER": None, "TZ": None}
    )
    if time.localtime().tm_gmtoff != 0:
        pytest.skip("written for a machine whose own zone is UTC")
    try:
        info = service.wait_app()
        assert harness.environ_of(info["pid"]).get("TZ") == "Asia/Shanghai"
        result = doctor(
            service.app_dir,
            "--json",
            HEYGEM_ENV_FILE=str(env_file),
            HEYGEM_RUN_DIR=str(service.run_dir),
            HEYGEM_CONDA_ENV=str(ort_env),
            HEYGEM_APP_COMMAND=f"python {harness.APP}",
        )
        doc = json.loads(result.stdout)
        assert doc["log"]["counts"] == {}, doc["log"]
    finally:
        service.cleanup()


def test_status_json_shows_the_last_tasks(launch_service) -> None:
    """README ('Watching the running service'): 'Each task has a code, frames, frames/s and an outcome …;
    `status --json` and the state file show the last ten.' The state file does; `status --json` prints only
    ok, running, launcher_pid, programs, preflight and error."""
    import json

    service = launch_service()
    ready(service)
    task(service, code="shown", frames=40, fps=40, encode=0.5)
    wait_for(lambda: task_state(service, "shown") == "done", 30, "the task to end")
    env = clean_environ(HEYGEM_RUN_DIR=str(service.run_dir))

    def shown() -> dict | None:  # type: ignore[type-arg]
        # The launcher lets the app's writes gather (READ_INTERVAL) before it reads them: the state follows the
        # app's end line within a fraction of a second, not at the same instant.
        run = subprocess.run(
            [*LAUNCH, "status", "--json"], env=env, cwd=service.app_dir, capture_output=True, text=True, timeout=30
        )
        doc = json.loads(run.stdout)
        return doc if [t["outcome"] for t in doc.get("tasks", [])] == ["done"] else None

    doc = wait_for(shown, 5, "status --json to show the task done")
    assert [(t["code"], t["outcome"]) for t in doc.get("tasks", [])] == [("shown", "done")], sorted(doc)
