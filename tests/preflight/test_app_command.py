"""HEYGEM_APP_COMMAND is checked by the preflight (exit 78, one line), and the wrapper never shows a traceback."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from launcher.preflight.appcommand import _python_target
from tests.conftest import assert_no_traceback, assert_refused_at_once

WRAPPER = Path(__file__).resolve().parents[2] / "launcher" / "service" / "data" / "app-wrapper.sh"
CPU = ("--require-provider", "CPUExecutionProvider")


@pytest.mark.parametrize(
    ("command", "named"),
    [
        ("python missing.py", "missing.py"),
        ("no-such-program --serve", "'no-such-program'"),
        ("python -u -m no_such_module", "module no_such_module"),
        ("./run.sh", "'./run.sh'"),
    ],
)
def test_a_command_that_cannot_start_is_a_config_error(launch, ort_env: Path, command: str, named: str) -> None:
    run = launch("--check-only", "--conda-env", str(ort_env), *CPU, env={"HEYGEM_APP_COMMAND": command})
    assert run.returncode == 78, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "HEYGEM_APP_COMMAND" in run.stderr and named in run.stderr
    assert_no_traceback(run)


def test_a_command_that_cannot_start_is_refused_before_the_service_starts(launch, ort_env: Path, app_dir: Path) -> None:
    """Bug: HEYGEM_PREFLIGHT=skip skipped the app command's check too, and the missing app.py crash-looped
    under supervisord. The check needs no probe: it comes first, skip or not."""
    (app_dir / "app.py").unlink()
    env = {"HEYGEM_CONDA_ENV": str(ort_env), "HEYGEM_PREFLIGHT": "skip", "HEYGEM_RUN_DIR": str(app_dir / "run")}
    began = time.monotonic()
    run = launch(*CPU, env=env, timeout=60)
    elapsed = time.monotonic() - began
    assert_refused_at_once(run.returncode, run.stderr, elapsed, "HEYGEM_APP_COMMAND", "app.py not found")
    assert not (app_dir / "run" / "supervisord.conf").exists()


def test_check_only_json_is_not_ok_when_the_probe_passes_and_the_command_cannot_start(
    launch, ort_env: Path, app_dir: Path
) -> None:
    """Bug: `"ok": true` and exit 78, one result with two verdicts. Should: ok false, cause config_error, the
    message the error, and the probe's own result still there (it passed)."""
    (app_dir / "app.py").unlink()
    run = launch("--check-only", "--json", "--conda-env", str(ort_env), *CPU)
    assert run.returncode == 78, run.stdout + run.stderr
    doc = run.json
    assert doc["ok"] is False and doc["cause"] == "config_error"
    assert "app.py not found" in doc["config_error"] and doc["message"] == doc["config_error"]
    assert doc["fix"] and doc["probe"]["report"]["node_providers"]["Conv"] == "CPUExecutionProvider"


def test_check_only_report_does_not_say_ok_when_the_command_cannot_start(launch, ort_env: Path, app_dir: Path) -> None:
    (app_dir / "app.py").unlink()
    run = launch("--check-only", "--conda-env", str(ort_env), *CPU)
    assert run.returncode == 78, run.stdout + run.stderr
    assert not any(line.startswith("OK") for line in run.stdout.splitlines()), run.stdout
    assert "REFUSED [config_error]: HEYGEM_APP_COMMAND='python app.py': app.py not found" in run.stdout
    assert "Probe (CPUExecutionProvider" in run.stdout  # the provider is still reported


@pytest.mark.parametrize(
    "command",
    ["python app.py", "python -u -X dev app.py", "python -m http.server", "python -m mypkg", "python -c pass"],
)
def test_a_command_that_can_start_passes(launch, ort_env: Path, app_dir: Path, command: str) -> None:
    (app_dir / "mypkg").mkdir()
    (app_dir / "mypkg" / "__main__.py").write_text("")
    run = launch("--check-only", "--conda-env", str(ort_env), *CPU, env={"HEYGEM_APP_COMMAND": command})
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (("app.py",), ("script", "app.py")),
        (("-u", "-W", "ignore", "app.py", "--x"), ("script", "app.py")),
        (("-mhttp.server",), ("module", "http.server")),
        (("-c", "print(1)"), None),
        ((), None),
    ],
)
def test_python_target(args: tuple[str, ...], target: tuple[str, str] | None) -> None:
    assert _python_target(args) == target


def test_wrapper_reports_a_missing_executable_in_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"PATH": "/usr/bin:/bin"}))
    # Its own session: the wrapper kills the rest of its process group when the app is gone.
    out = subprocess.run(
        ["sh", str(WRAPPER), "python3", str(env_file), "no-such-app", "--serve"],
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
        check=False,
    )
    assert out.returncode == 127
    assert out.stderr.strip() == "heygem app-wrapper: cannot start no-such-app: No such file or directory"
