"""The exit policy's words and counts (pure): the restart budget, how an exit is described, the FATAL line."""

from __future__ import annotations

from pathlib import Path

from launcher.config.settings import build_settings
from launcher.service.exitpolicy import RestartBudget, exit_reason, fatal_line, interrupted_code, reasons_from_log


def settings(**values: str):  # type: ignore[no-untyped-def]
    return build_settings({}, {"HEYGEM_RUN_DIR": "/tmp/x", **values}, {}, cwd=Path("/"))


def test_budget_counts_within_the_window_only() -> None:
    budget = RestartBudget(settings(HEYGEM_MAX_RESTARTS="2", HEYGEM_RESTART_WINDOW="10"))
    assert not budget.record(0.0) and not budget.record(1.0)
    assert budget.record(2.0)  # the third in 10 s
    assert not RestartBudget(settings(HEYGEM_MAX_RESTARTS="2", HEYGEM_RESTART_WINDOW="10")).record(100.0)
    budget.times.clear()
    for t in (0.0, 20.0, 40.0):
        assert not budget.record(t)  # spread out: never too many
    assert len(budget) == 1


def test_exit_is_always_described_with_its_status() -> None:
    line = b"2026-11-29 INFO exited: app (exit status 3; not expected)"
    assert reasons_from_log([b"noise", line]) == {"app": "exit status 3"}
    killed = b"2026 INFO exited: app (terminated by SIGKILL; not expected)"
    assert reasons_from_log([line, killed]) == {"app": "terminated by SIGKILL"}  # the last exit of each app
    other = b"2026 INFO exited: app-1 (exit status 1; not expected)"
    assert reasons_from_log([line, other]) == {"app": "exit status 3", "app-1": "exit status 1"}
    assert exit_reason(None, {"exitstatus": 2, "description": "pid 12, uptime 0:00:05"}) == "exit status 2"


def test_fatal_line_counts_the_first_start_too() -> None:
    line = fatal_line(settings(HEYGEM_START_RETRIES="3"), "exit status 3", "(none)")
    assert line.startswith("app gave up after 4 quick failures (HEYGEM_START_RETRIES=3): exit status 3")
    assert "after 1 quick failure " in fatal_line(settings(HEYGEM_START_RETRIES="0"), "x", "y")


def test_signal_exit_codes() -> None:
    assert interrupted_code(15) == 143 and interrupted_code(2) == 130
