"""The entry point (launcher/__main__.py): a plain `--check-only` and a plain run skip click; anything else goes
through the click CLI, which answers as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.__main__ import plain_invocation
from tests.conftest import clean_environ

CPU = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider", "HEYGEM_CONDA_ENV": ""}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--check-only"], ("check", {}, False)),
        (["--json", "--check-only"], ("check", {}, True)),
        (["--check-only", "--app-dir", "/srv/app"], ("check", {"HEYGEM_APP_DIR": "/srv/app"}, False)),
        (["--app-dir=/srv/app", "--check-only"], ("check", {"HEYGEM_APP_DIR": "/srv/app"}, False)),
        (["--conda-env=", "--check-only"], ("check", {"HEYGEM_CONDA_ENV": ""}, False)),
        ([], ("run", {}, False)),
        (["--stop-grace", "3"], ("run", {"HEYGEM_STOP_GRACE": "3"}, False)),
    ],
)
def test_plain_invocations_are_read_without_click(args: list[str], expected: object) -> None:
    assert plain_invocation(args, {}) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--json"],  # a usage error: click says so
        ["--check-only", "--check-only"],
        ["--check-only", "--app-dir", "a", "--app-dir", "b"],
        ["--check-only", "--app-dir"],
        ["--check-only", "--app-dir", "--json"],  # click would take `--json` as the folder
        ["--check-only", "--help"],
        ["--check-only", "--bogus"],
        ["check"],
        ["status", "--json"],
        ["--version"],
    ],
)
def test_anything_else_goes_to_click(args: list[str]) -> None:
    assert plain_invocation(args, {}) is None


def test_shell_completion_goes_to_click() -> None:
    assert plain_invocation(["--check-only"], {"_HEYGEM_LAUNCH_COMPLETE": "bash_source"}) is None


def _modules_after(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sys.modules) + '\\n'))\n"
        f"sys.argv = ['heygem-launch', *{args!r}]\n"
        "runpy.run_module('launcher', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=clean_environ(**CPU), capture_output=True, text=True, check=False
    )
    line = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES "))
    return proc.returncode, set(line.split()[1:])


def test_check_only_runs_without_click_and_answers_as_the_cli_does(launch, app_dir: Path) -> None:  # type: ignore[no-untyped-def]
    code, modules = _modules_after(["--check-only"], app_dir)
    assert code == 0
    assert "click" not in modules and "launcher.cli" not in modules
    plain, via_click = launch("--check-only", "--json", env=CPU), launch("check", "--json", env=CPU)
    assert plain.returncode == via_click.returncode == 0
    for key in ("ok", "cause", "message", "required_provider", "libraries", "environment"):
        assert plain.json[key] == via_click.json[key]


def test_usage_errors_are_still_clicks(launch) -> None:  # type: ignore[no-untyped-def]
    run = launch("--check-only", "--bogus")
    assert run.returncode == 64
    assert run.stderr.startswith("Usage: heygem-launch") and "--bogus" in run.stderr


def test_a_bad_setting_on_the_plain_path_is_the_same_one_line_and_document(launch) -> None:  # type: ignore[no-untyped-def]
    plain = launch("--check-only", "--json", "--stop-grace", "x", env=CPU)
    via_click = launch("check", "--json", "--stop-grace", "x", env=CPU)
    assert plain.returncode == via_click.returncode == 78
    assert plain.stderr == via_click.stderr and plain.stderr.startswith("heygem-launch: error: HEYGEM_STOP_GRACE=")
    assert plain.json == via_click.json
