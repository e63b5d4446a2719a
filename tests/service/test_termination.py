"""The termination message (HEYGEM_TERMINATION_LOG; /dev/termination-log in a Kubernetes container): the one-line
cause of every exit that is not a clean stop, from the real service with the HeyGem-like app."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.harness import wait_for


def _message(tmp_path: Path) -> str:
    return (tmp_path / "termination-log").read_text()


def _env(tmp_path: Path, **more: str) -> dict[str, str | None]:
    return {"HEYGEM_TERMINATION_LOG": str(tmp_path / "termination-log"), **more}


def test_a_crash_loop_leaves_its_cause(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service(mode="crash-loop", env=_env(tmp_path))
    assert svc.wait(timeout=120) == 70
    message = _message(tmp_path)
    assert message.startswith("app gave up after") and message.count("\n") == 1, message
    assert message.strip() in svc.stderr()


def test_a_refusal_leaves_its_cause(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service(env=_env(tmp_path, HEYGEM_REQUIRE_PROVIDER="CUDAExecutionProvider"))
    assert svc.wait(timeout=120) == 69
    assert _message(tmp_path).startswith("REFUSED ["), _message(tmp_path)


def test_a_bad_setting_leaves_its_line(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service(env=_env(tmp_path, HEYGEM_STOP_GRACE="soon"))
    assert svc.wait(timeout=60) == 78
    assert "HEYGEM_STOP_GRACE" in _message(tmp_path)


def test_a_clean_stop_leaves_nothing(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service(env=_env(tmp_path))
    svc.wait_app()
    wait_for(lambda: "started: pid" in svc.stderr(), 30, "the app started")
    svc.signal(signal.SIGTERM)
    assert svc.wait(timeout=30) == 0
    assert not (tmp_path / "termination-log").exists()
