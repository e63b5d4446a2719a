"""Found by trying the product as a newcomer (a fresh clone, the README, bad input): each failed before its fix.

- `--check-only` said OK (exit 0) where the start refuses with 78: the metrics port on the app's, or the app's
  port busy. One result, one verdict.
- `replay` of a FIFO blocked forever, and of /dev/zero grew without bound.
- HEYGEM_TERMINATION_LOG naming a folder or a missing folder was accepted, and the cause was then lost silently.
- An implicit ./.env that is a FIFO was skipped silently, where an explicit one is refused.
- A probe with a bad HEYGEM_RUN_DIR exited 78: a probe passes (0) or fails (1).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from launcher.system import termination
from tests.conftest import assert_no_traceback

CPU = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider"}


@pytest.fixture
def cpu_env(ort_env: Path) -> dict[str, str]:
    return {**CPU, "HEYGEM_CONDA_ENV": str(ort_env)}


def test_check_only_refuses_the_metrics_port_on_the_apps(launch, cpu_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**cpu_env, "HEYGEM_APP_PORT": "7911", "HEYGEM_METRICS_PORT": "7911", "HEYGEM_RUN_DIR": str(tmp_path / "r")}
    text, doc = launch("--check-only", env=env), launch("--check-only", "--json", env=env)
    assert (
        text.returncode == 78 and "REFUSED [config_error]" in text.stdout and "HEYGEM_METRICS_PORT=7911" in text.stdout
    )
    assert doc.returncode == 78 and doc.json["ok"] is False and doc.json["cause"] == "config_error"
    assert_no_traceback(text)


def test_check_only_refuses_a_busy_app_port(launch, cpu_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**cpu_env, "HEYGEM_APP_PORT": str(port), "HEYGEM_RUN_DIR": str(tmp_path / "r")}
        doc = launch("--check-only", "--json", env=env)
    assert doc.returncode == 78 and doc.json["ok"] is False and f"port {port}" in doc.json["config_error"]
    # The fix fits a busy port too (found by a newcomer pass: it named HEYGEM_APP_COMMAND and HEYGEM_APP_DIR).
    assert "HEYGEM_APP_COMMAND" not in doc.json["fix"] and "port" in doc.json["fix"], doc.json["fix"]


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_replay_refuses_what_is_not_a_recorded_log(launch, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    path = Path(kind)
    if kind == "fifo":
        path = tmp_path / "dh.log"
        os.mkfifo(path)
    run = launch("replay", str(path), "--json", timeout=20)
    assert run.returncode == 64, run.stderr
    assert str(path) in run.stderr and "not a regular file" in run.stderr and run.stderr.count("\n") == 1
    stderr_too = launch("replay", str(Path(__file__)), "--stderr", str(path), timeout=20)
    assert stderr_too.returncode == 64 and "not a regular file" in stderr_too.stderr


@pytest.mark.parametrize("where", ["folder", "missing"])
def test_a_termination_log_that_cannot_be_written_is_refused(launch, tmp_path: Path, where: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path if where == "folder" else tmp_path / "no" / "such" / "termination-log"
    run = launch("--check-only", env={**CPU, "HEYGEM_TERMINATION_LOG": str(path)})
    assert run.returncode == 78 and "HEYGEM_TERMINATION_LOG" in run.stderr, run.stderr
    assert_no_traceback(run)


def test_a_termination_message_that_cannot_be_written_is_said(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    target = gone / "termination-log"
    gone.rmdir()  # the folder was checked when the settings were read, and is gone at the exit
    termination.write("REFUSED [cuda_libraries_missing]: …", target, {})
    err = capfd.readouterr().err
    assert "HEYGEM_TERMINATION_LOG" in err and "cannot write the termination message" in err and str(target) in err


@pytest.mark.parametrize("kind", ["fifo", "device", "proc"])
def test_a_termination_log_that_is_no_file_never_holds_the_exit(launch, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Found by a newcomer pass: a FIFO as HEYGEM_TERMINATION_LOG held the run forever, without a word, in the
    open() of the message written for its own refusal (the raw value is used for an exit before the settings
    are read). Now the message goes only into a regular file: one line says why not, then the 78, at once.
    /proc/self/mem, which stat() calls regular, is refused by the setting too."""
    path = {"fifo": tmp_path / "fifo", "device": Path("/dev/full"), "proc": Path("/proc/self/mem")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    env = {**CPU, "HEYGEM_TERMINATION_LOG": str(path), "HEYGEM_RUN_DIR": str(tmp_path / "run")}
    run = launch(env=env, timeout=30)  # the container's run, not --check-only
    assert run.returncode == 78, run
    assert f"HEYGEM_TERMINATION_LOG={path}: cannot write the termination message" in run.stderr, run.stderr
    assert "HEYGEM_TERMINATION_LOG='" in run.stderr and "must be a regular file" in run.stderr, run.stderr
    assert_no_traceback(run)
    assert launch("--check-only", env=env, timeout=30).returncode == 78


def test_an_implicit_env_file_that_is_a_fifo_is_refused(launch, app_dir: Path) -> None:  # type: ignore[no-untyped-def]
    os.mkfifo(app_dir / ".env")
    run = launch("--check-only", env=CPU, timeout=20)
    assert run.returncode == 78 and ".env" in run.stderr and "not a regular file" in run.stderr, run.stderr


@pytest.mark.parametrize("run_dir", ["relative/dir", ""])
def test_a_probe_with_a_bad_run_dir_fails_with_1(launch, run_dir: str) -> None:  # type: ignore[no-untyped-def]
    run = launch("probe", "ready", env={"HEYGEM_RUN_DIR": run_dir})
    assert run.returncode == 1 and "ready: FAIL" in run.stdout and "HEYGEM_RUN_DIR" in run.stdout, run.stdout
    assert_no_traceback(run)


def test_on_off_settings_say_on_or_off(launch) -> None:  # type: ignore[no-untyped-def]
    run = launch("--check-only", env={**CPU, "HEYGEM_SESSION_AUDIT": "maybe"})
    assert run.returncode == 78 and "must be on or off" in run.stderr
