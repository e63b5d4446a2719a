from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import envs

# The installed console script; `python -m launcher` where the package was installed with --target.
_SCRIPT = Path(sys.executable).parent / "heygem-launch"
LAUNCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "launcher"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would steer the launcher or the loader."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEYGEM_", "CONDA_", "VIRTUAL_ENV", "PYTEST_"))
        and k not in ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "ORT_CUDA_UNAVAILABLE", "PYTHONPATH")
    }
    env.update(extra)
    return env


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    # The default HEYGEM_APP_COMMAND is `python app.py`, and the preflight checks that app.py exists.
    (path / "app.py").write_text("print('app')\n")
    return path


@pytest.fixture
def launch(app_dir: Path):  # type: ignore[no-untyped-def]
    """Run the installed `heygem-launch` as a real subprocess, in the app dir, with a clean environment."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None) -> Run:
        # No HEYGEM_APP_DIR: the default "." is the working directory, the app dir.
        environ = clean_environ()
        environ.update(env or {})
        proc = subprocess.run(
            [*LAUNCH, *args],
            env=environ,
            cwd=cwd or app_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr + run.stdout, run.stderr


REFUSED_AT_ONCE_S = 1.0  # the spec: a refusal that needs no probe comes within a second


def assert_refused_at_once(returncode: int, stderr: str, elapsed: float, *named: str) -> None:
    """Exit 78 within a second, before any preflight: one line naming the cause, no report (no probe line,
    no library table)."""
    assert returncode == 78, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("heygem-launch: error: "), stderr
    for name in named:
        assert name in stderr, stderr
    for report_line in ("Probe", "library ", "ONNX Runtime:", "Settings"):
        assert report_line not in stderr, stderr
    assert elapsed < REFUSED_AT_ONCE_S, f"{elapsed:.2f} s: {stderr}"


@pytest.fixture(scope="session")
def ort_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain venv with onnxruntime-gpu (linked from the test venv): no CUDA libraries at all."""
    prefix = envs.make_venv(tmp_path_factory.mktemp("envs") / "ort")
    envs.link_ort(prefix)
    return prefix


@pytest.fixture(scope="session")
def cuda13_env() -> Path:
    """onnxruntime-gpu plus NVIDIA's CUDA 13 runtime wheels, as installed by pip: everything but a driver."""

    def build(prefix: Path) -> None:
        envs.pip_target(prefix, *envs.CUDA13_WHEELS)
        envs.link_ort(prefix)

    return envs.cached_env("cuda13", list(envs.CUDA13_WHEELS), build)


@pytest.fixture(scope="session")
def cpu_ort_env() -> Path:
    """The CPU `onnxruntime` package alone."""

    def build(prefix: Path) -> None:
        envs.pip_target(prefix, "onnxruntime")
        (envs.site_of(prefix) / "zz_test_venv.pth").write_text(f"{envs.TEST_SITE}\n")

    return envs.cached_env("cpu-ort", ["onnxruntime"], build)


@pytest.fixture(scope="session")
def shadowed_env() -> Path:
    """onnxruntime-gpu installed, then the CPU `onnxruntime` installed over it: they share one folder."""

    def build(prefix: Path) -> None:
        envs.pip_target(prefix, "onnxruntime-gpu")
        envs.pip_target(prefix, "onnxruntime", upgrade=True)
        (envs.site_of(prefix) / "zz_test_venv.pth").write_text(f"{envs.TEST_SITE}\n")

    return envs.cached_env("shadowed", ["onnxruntime-gpu", "then onnxruntime"], build)


WATCH_STALL_SECONDS = 3.0  # HEYGEM_STALL_SECONDS for the watch tests (time compressed)


@pytest.fixture
def launch_service(tmp_path: Path, ort_env: Path):  # type: ignore[no-untyped-def]
    """The real service with the HeyGem-like app, time compressed (TEST_APP_SPEED=20), stopped afterwards.
    test_service.py and test_restart*.py define their own."""
    from tests import harness  # harness imports this module

    started: list[harness.Service] = []

    def start(**kw) -> harness.Service:  # type: ignore[no-untyped-def]
        env = {"HEYGEM_STALL_SECONDS": str(WATCH_STALL_SECONDS), "TEST_APP_SPEED": "20", **kw.pop("env", {})}
        service = harness.start(tmp_path, ort_env, env=env, **kw)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()
