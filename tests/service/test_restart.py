"""Restart after a config change: `heygem-launch restart` (docker exec) and SIGHUP validate first and keep
the running app on refusal. The launcher runs outside a PID namespace here, as `docker exec` shares the
container's: the pid file is only honoured from the same PID namespace."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import control, environ_of, wait_for

PROVIDER = "HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\n"


@pytest.fixture
def service(tmp_path: Path, ort_env: Path) -> Iterator[harness.Service]:
    # The provider comes from the .env file, so that a change of it there takes effect (the environment
    # would win over the file).
    (tmp_path / "heygem.env").write_text(f"{PROVIDER}APP_SETTING=old\n")
    svc = harness.start(
        tmp_path, ort_env, env={"HEYGEM_ENV_FILE": str(tmp_path / "heygem.env"), "HEYGEM_REQUIRE_PROVIDER": None}
    )
    yield svc
    svc.cleanup()


class Watcher:
    """Asks the app every 50 ms during an attempt; records every answer's pid and every miss."""

    def __init__(self, svc: harness.Service) -> None:
        self.svc, self.pids, self.misses = svc, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            info = self.svc.get()
            if info is None:
                self.misses += 1
            else:
                self.pids.add(info["pid"])

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_good_change_restarts_with_the_new_environment(service: harness.Service, tmp_path: Path) -> None:
    old = service.wait_app()
    (tmp_path / "heygem.env").write_text(f"{PROVIDER}APP_SETTING=new\n")
    result = control(service, "restart")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "app restarted with the new environment" in result.stdout
    # "it is ready" means what `probe ready` means (a newcomer found it said so while still STARTING).
    ready = control(service, "probe", "ready")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    new = service.wait_app(not_pid=old["pid"])
    assert new["env"]["APP_SETTING"] == "new"
    assert environ_of(new["pid"])["APP_SETTING"] == "new"
    # The restart's probe creates a session in the app's environment: it must not be reported to the running
    # service as a stranger's record (the probe runs without the audit's socket).
    assert "ignored a session record" not in service.stderr(), service.stderr()


def test_refused_change_keeps_the_old_app_answering(service: harness.Service, tmp_path: Path) -> None:
    old = service.wait_app()
    # On this machine CUDA cannot pass the preflight: a change that would put the app on the CPU.
    (tmp_path / "heygem.env").write_text("APP_SETTING=new\nHEYGEM_REQUIRE_PROVIDER=CUDAExecutionProvider\n")
    with Watcher(service) as watcher:
        result = control(service, "restart")
    assert result.returncode == 69, result.stdout + result.stderr
    assert "REFUSED [cuda_libraries_missing]" in result.stdout
    assert watcher.pids == {old["pid"]} and watcher.misses == 0
    assert service.get()["pid"] == old["pid"]
    assert environ_of(old["pid"])["APP_SETTING"] == "old"
    status = json.loads(control(service, "status", "--json").stdout)
    assert status["preflight"]["cause"] == "cuda_libraries_missing"


def test_invalid_setting_in_the_change_exits_78_and_keeps_the_app(service: harness.Service, tmp_path: Path) -> None:
    old = service.wait_app()
    (tmp_path / "heygem.env").write_text(f"{PROVIDER}HEYGEM_PREFLIGHT_TIMEOUT=soon\n")
    result = control(service, "restart")
    assert result.returncode == 78
    assert "HEYGEM_PREFLIGHT_TIMEOUT" in result.stderr
    assert service.get()["pid"] == old["pid"]


def test_sighup_does_the_same(service: harness.Service, tmp_path: Path) -> None:
    old = service.wait_app()
    (tmp_path / "heygem.env").write_text(f"{PROVIDER}APP_SETTING=from-sighup\n")
    service.signal(signal.SIGHUP)
    new = service.wait_app(not_pid=old["pid"])
    assert environ_of(new["pid"])["APP_SETTING"] == "from-sighup"
    # The restart is deliberate: not counted as a crash.
    status = json.loads(control(service, "status", "--json").stdout)
    assert status["programs"][0]["restarts"] == 0


def test_status_reports_state_pid_uptime_and_preflight(service: harness.Service) -> None:
    info = service.wait_app()
    wait_for(lambda: json.loads(control(service, "status", "--json").stdout)["ok"], 10, "the app to be RUNNING")
    status = json.loads(control(service, "status", "--json").stdout)
    app = status["programs"][0]
    assert app["name"] == "app" and app["state"] == "RUNNING" and app["pid"] == info["pid"]
    assert app["uptime_s"] >= 0 and app["restarts"] == 0
    assert status["preflight"]["ok"] is True and status["preflight"]["checked_at"] > 0
    text = control(service, "status")
    assert text.returncode == 0 and "RUNNING" in text.stdout and "last preflight: passed" in text.stdout


def test_status_and_restart_without_a_service(tmp_path: Path) -> None:
    env = clean_environ(HEYGEM_RUN_DIR=str(tmp_path / "none"))
    for command in ("status", "restart"):
        result = subprocess.run([*LAUNCH, command], env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert result.returncode == 69
        assert "not running" in result.stdout + result.stderr
