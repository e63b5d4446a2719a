"""Issue 8, items 3, 4, 13, 14, 15 and 16 against a running service (real supervisord, the HeyGem-like app):
a bad .env never touches the healthy app, the clients read the service's state rather than the file, a
restart whose new app does not come up is rolled back, the restart's flags are applied, and the messages say
what happened."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.harness import control, environ_of, wait_for

PROVIDER = "HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\n"
SECRET = "s3cr3t-XYZ"


@pytest.fixture
def service(tmp_path: Path, ort_env: Path) -> Iterator[harness.Service]:
    (tmp_path / "heygem.env").write_text(f"{PROVIDER}APP_SETTING=old\n")
    svc = harness.start(
        tmp_path,
        ort_env,
        env={
            "HEYGEM_ENV_FILE": str(tmp_path / "heygem.env"),
            "HEYGEM_REQUIRE_PROVIDER": None,
            "HEYGEM_START_RETRIES": "1",
        },
    )
    yield svc
    svc.cleanup()


def write_env(svc: harness.Service, content: bytes) -> None:
    (svc.run_dir.parent / "heygem.env").write_bytes(content)


def healthy(svc: harness.Service, pid: int) -> None:
    """The same app answers, with its old environment, and the launcher runs on."""
    svc.assert_alive()
    info = svc.get()
    assert info is not None and info["pid"] == pid
    assert environ_of(pid)["APP_SETTING"] == "old"


# -- items 3 and 4 through `restart` -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "named"),
    [
        (PROVIDER.encode() + b"APP_SETTING=a\x00b\n", "APP_SETTING contains a NUL byte"),  # the handed case
        (PROVIDER.encode() + b"APP_SETTING=caf\xe9\n", "APP_SETTING is not valid UTF-8"),
        (PROVIDER.encode() + f'API_TOKEN="{SECRET}\n'.encode(), "key 'API_TOKEN'"),
        (PROVIDER.encode() + b"HEYGEM_PATTERN_BLOCKED=a{99999999999}\n", "HEYGEM_PATTERN_BLOCKED"),
    ],
)
def test_bad_env_file_on_restart_exits_78_and_leaves_the_app_untouched(
    service: harness.Service, content: bytes, named: str
) -> None:
    old = service.wait_app()
    write_env(service, content)
    result = control(service, "restart")
    assert result.returncode == 78, result
    assert named in result.stderr
    answer = service.run_dir / "restart.json"  # none when the client refused the file before asking the service
    everything = result.stdout + result.stderr + service.stderr() + (answer.read_text() if answer.exists() else "")
    assert SECRET not in everything
    healthy(service, old["pid"])
    # The service checks too, with its own environment (a bare SIGHUP, as `docker kill -s HUP` sends): the
    # handed case stopped the app and exited 70 there. It answers 78 and keeps the app.
    service.signal(signal.SIGHUP)
    wait_for(lambda: answer.exists() and json.loads(answer.read_text()).get("exit_code"), 60, "the service's answer")
    document = json.loads(answer.read_text())
    assert document["exit_code"] == 78 and named in document["message"], document
    assert SECRET not in answer.read_text() + service.stderr()
    healthy(service, old["pid"])


# -- item 13: the clients read the service, not the file ---------------------------------------------------
def test_status_probes_and_doctor_work_while_the_env_file_is_broken(service: harness.Service) -> None:
    old = service.wait_app()
    wait_for(lambda: control(service, "probe", "ready").returncode == 0, 20, "the app to be ready")
    write_env(service, b'HEYGEM_STALL_SECONDS=soon\nAPI_TOKEN="unclosed\n')  # mid-edit
    status = control(service, "status", "--json")
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["programs"][0]["pid"] == old["pid"]
    for kind in ("live", "ready", "startup"):
        probe = control(service, "probe", kind)
        assert probe.returncode == 0, probe
    doctor = control(service, "doctor", "--json")
    assert doctor.returncode in (0, 69), doctor  # a diagnosis, not a config error
    report = json.loads(doctor.stdout)
    assert report["preflight"]["ok"] is True  # the service's own settings: CPU provider, as it runs
    assert report["app"]["pid"] == old["pid"]
    healthy(service, old["pid"])


# -- item 14: a restart that cannot fail --------------------------------------------------------------------
def test_restart_to_an_app_that_does_not_start_rolls_back(service: harness.Service) -> None:
    old = service.wait_app()
    write_env(service, f"{PROVIDER}APP_SETTING=new\n".encode())
    # The handed case; a flag, since the container's environment (HEYGEM_APP_COMMAND) wins over the file.
    # The preflight now checks the app command: refused (78) before anything is replaced.
    missing = control(service, "restart", "--json", "--app-command", "python missing.py")
    assert missing.returncode == 78 and "missing.py" in missing.stdout, missing
    assert service.get()["pid"] == old["pid"]  # type: ignore[index]
    # Its whole kind: a new app that exists but dies at once (crash-loops) is rolled back.
    (service.app_dir / "crash.py").write_text("import sys\nsys.exit(3)\n")
    result = control(service, "restart", "--json", "--app-command", "python crash.py")
    assert result.returncode == 69, result
    answer = json.loads(result.stdout)
    assert answer["rolled_back"] is True and "exited" in answer["message"], answer
    assert re.search(r"exit status \d+", answer["message"]), answer["message"]
    back = service.wait_app(timeout=30, not_pid=old["pid"])
    assert environ_of(back["pid"])["APP_SETTING"] == "old"
    wait_for(lambda: json.loads(control(service, "status", "--json").stdout)["ok"], 20, "the app to be RUNNING")
    service.assert_alive()


def test_restart_to_an_app_never_ready_rolls_back_at_the_timeout(service: harness.Service) -> None:
    old = service.wait_app()
    write_env(
        service,
        f"{PROVIDER}APP_SETTING=new\nHEYGEM_READY_MARKERS=never printed\nHEYGEM_RESTART_TIMEOUT=3\n".encode(),
    )
    result = control(service, "restart")
    assert result.returncode == 69, result
    assert "not ready within HEYGEM_RESTART_TIMEOUT=3 s" in result.stderr
    back = service.wait_app(timeout=30, not_pid=old["pid"])
    assert environ_of(back["pid"])["APP_SETTING"] == "old"
    service.assert_alive()


# -- item 15: the restart's flags --------------------------------------------------------------------------
def test_restart_flags_are_applied(service: harness.Service) -> None:
    old = service.wait_app()
    # The file says CPU; the flag asks for CUDA, which this machine cannot pass: refused, so it was applied.
    result = control(service, "restart", "--require-provider", "CUDAExecutionProvider")
    assert result.returncode == 69, result
    assert "REFUSED [cuda_libraries_missing]" in result.stdout
    healthy(service, old["pid"])
    bad = control(service, "restart", "--preflight-timeout", "1e308")
    assert bad.returncode == 78 and "HEYGEM_PREFLIGHT_TIMEOUT" in bad.stderr
    good = control(service, "restart", "--app-command", f"python {harness.APP} --flagged")
    assert good.returncode == 0, good
    new = service.wait_app(not_pid=old["pid"])
    assert "--flagged" in Path(f"/proc/{new['pid']}/cmdline").read_text()


# -- item 16: messages --------------------------------------------------------------------------------------
def test_restart_messages_name_real_pids_and_no_stray_lines(service: harness.Service) -> None:
    pid = service.wait_app()["pid"]
    for n in range(4):
        write_env(service, f"{PROVIDER}APP_SETTING=v{n}\n".encode())
        result = control(service, "restart")
        assert result.returncode == 0, result
        assert f"pid {service.wait_app(not_pid=pid)['pid']}" in result.stderr + result.stdout
        pid = service.get()["pid"]
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=20) == 0
    err, out = service.stderr(), service.stdout()
    assert "pid ?" not in err and "pid None" not in err + out
    assert not re.search(r"^\s*(Terminated|Killed)\s*$", out + (service.run_dir / "app.log").read_text(), re.M)
    started = re.findall(r"app started: pid (\d+) \(wrapper (\d+)\)", err)
    assert len(started) == 5, err


def test_launcher_settings_do_not_reach_the_app(service: harness.Service) -> None:
    info = service.wait_app()
    env = environ_of(info["pid"])
    assert not [key for key in env if key.startswith("HEYGEM_")], sorted(env)


def test_crash_loop_says_how_many_quick_failures_there_really_were(tmp_path: Path, ort_env: Path) -> None:
    svc = harness.start(tmp_path, ort_env, mode="crash-loop", env={"HEYGEM_START_RETRIES": "2"})
    try:
        assert svc.wait(timeout=60) == 70
        attempts = svc.stdout().count("cannot start: crash-loop mode")
        assert attempts == 3
        assert f"gave up after {attempts} quick failures (HEYGEM_START_RETRIES=2)" in svc.stderr()
        assert "exit status 3" in svc.stderr()
    finally:
        svc.cleanup()


def test_crash_line_names_the_exit_status(tmp_path: Path, ort_env: Path) -> None:
    svc = harness.start(tmp_path, ort_env, mode="crash", env={"TEST_APP_CRASH_AFTER": "1.5"})
    try:
        wait_for(lambda: "app exited (" in svc.stderr(), 30, "the crash line")
        line = next(line for line in svc.stderr().splitlines() if "app exited (" in line)
        assert "exit status 3" in line, line
    finally:
        svc.cleanup()


def test_two_restarts_at_once_each_get_their_answer(service: harness.Service) -> None:
    """Each client's request is its own file with its own id: neither is lost, neither waits for nothing."""
    from concurrent.futures import ThreadPoolExecutor

    old = service.wait_app()
    write_env(service, f"{PROVIDER}APP_SETTING=both\n".encode())
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _i: control(service, "restart", "--json"), range(2)))
    assert [r.returncode for r in results] == [0, 0], results
    ids = {json.loads(r.stdout)["id"] for r in results}
    assert len(ids) == 2
    assert environ_of(service.wait_app(not_pid=old["pid"])["pid"])["APP_SETTING"] == "both"
