"""Issue 19's backoff: an app that crashes (or has an incident) again and again is started again after growing
waits (HEYGEM_RESTART_DELAY doubled, capped at HEYGEM_RESTART_DELAY_MAX), back to the first once it ran
HEYGEM_RESTART_RESET seconds; `status` and the metrics show the wait, and a SIGTERM during it stops at once.
Real supervisord, the HeyGem-like app crashing as told (TEST_APP_MODE=crash), real signals."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests import harness
from tests.harness import control, wait_for
from tests.watch.test_metrics import scrape

WAITS = re.compile(r"app exited \(exit status 3\); started again in (\S+) s")
# Crashes 1.5 s after its start: past HEYGEM_START_SECONDS=1, so a crash of a running app, not a failed start.
CRASHING = {"TEST_APP_CRASH_AFTER": "1.5", "HEYGEM_MAX_RESTARTS": "20", "HEYGEM_RESTART_WINDOW": "600"}


@pytest.fixture
def launch(tmp_path: Path, ort_env: Path) -> Iterator[Any]:
    started: list[harness.Service] = []

    def start(env: dict[str, str | None]) -> harness.Service:
        service = harness.start(tmp_path, ort_env, mode="crash", env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()


def waits(service: harness.Service) -> list[float]:
    return [float(w) for w in WAITS.findall(service.stderr())]


def restarts(service: harness.Service, count: int, timeout: float = 60) -> list[float]:
    def seen() -> list[float] | None:
        service.assert_alive()
        found = waits(service)
        return found if len(found) >= count else None

    try:
        return wait_for(seen, timeout, f"{count} restarts")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {service.stderr()[-3000:]}") from None


def app_status(service: harness.Service) -> dict[str, Any]:
    (program,) = json.loads(control(service, "status", "--json").stdout)["programs"]
    return dict(program)


def test_restarts_wait_doubling_delays_up_to_the_cap_shown_by_status_and_metrics(launch) -> None:  # type: ignore[no-untyped-def]
    metrics = harness.free_port()
    service = launch(
        {**CRASHING, "HEYGEM_RESTART_DELAY": "1", "HEYGEM_RESTART_DELAY_MAX": "4", "HEYGEM_METRICS_PORT": str(metrics)}
    )
    assert restarts(service, 3)[:3] == [1, 2, 4]

    # The fourth wait is the cap (4 s): long enough to read it from `status` and the metrics while it runs.
    assert restarts(service, 4, 30)[3] == 4
    program = app_status(service)
    assert program["restart_backoff_s"] == 4 and 0 < program["restart_in_s"] <= 4, program
    assert "starts again in" in control(service, "status").stdout
    assert scrape(metrics)[("heygem_restart_backoff_seconds", (("app", "app"),))] == 4

    # The next start comes only after the wait: the app is not answering before it.
    crashed_at = time.monotonic()
    wait_for(lambda: service.assert_alive() or service.get() is not None, 30, "the app after its wait")
    assert time.monotonic() - crashed_at >= program["restart_in_s"] - 0.5
    assert scrape(metrics)[("heygem_restart_backoff_seconds", (("app", "app"),))] == 0


def test_sigterm_during_a_long_wait_stops_at_once(launch) -> None:  # type: ignore[no-untyped-def]
    service = launch({**CRASHING, "HEYGEM_RESTART_DELAY": "30"})
    assert restarts(service, 1, 30) == [30]
    began = time.monotonic()
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=10) == 0
    assert time.monotonic() - began < 2
    assert service.get() is None


def test_a_healthy_stretch_resets_the_wait_to_the_first_delay(launch) -> None:  # type: ignore[no-untyped-def]
    # Each app runs 1.5 s, past HEYGEM_RESTART_RESET=1: every restart waits the first delay again.
    service = launch({**CRASHING, "HEYGEM_RESTART_DELAY": "0.5", "HEYGEM_RESTART_RESET": "1"})
    assert restarts(service, 3)[:3] == [0.5, 0.5, 0.5]


def test_the_budget_still_ends_a_crash_loop_with_70(launch) -> None:  # type: ignore[no-untyped-def]
    env = {**CRASHING, "HEYGEM_MAX_RESTARTS": "2", "HEYGEM_RESTART_DELAY": "0.2"}
    service = launch(env)
    assert service.wait(timeout=60) == 70
    assert "restarted 3 times in 600 s (HEYGEM_MAX_RESTARTS=2)" in service.stderr()
    assert waits(service) == [0.2, 0.4]


def test_incident_restarts_wait_the_same_growing_backoff(tmp_path: Path, ort_env: Path) -> None:
    # A sticky CUDA error printed by the app: stopped at once (test_sticky_errors.py), started after its wait.
    service = harness.start(tmp_path, ort_env, env={"HEYGEM_RESTART_DELAY": "1", "HEYGEM_RESTART_DELAY_MAX": "8"})
    try:
        pid = None
        for expected in (1, 2):
            app = service.wait_app(timeout=30, not_pid=pid)
            pid = app["pid"]
            wait_for(lambda pid=pid: f"started: pid {pid}" in service.stderr(), 30, "the app's start logged")
            asked = time.monotonic()
            service.get("/emit/raw?" + urlencode({"text": "RuntimeError: CUDA error: unspecified launch failure"}))
            wait_for(lambda pid=pid: harness.gone(pid), 5, "the old app gone")
            line = f"app starts again in {expected} s (HEYGEM_RESTART_DELAY, doubled at each restart)"
            wait_for(lambda line=line: line in service.stderr(), 5, line)
            service.wait_app(timeout=30, not_pid=pid)
            assert time.monotonic() - asked >= expected
    finally:
        service.cleanup()
