"""Issue 8: many restarts in a row leave the launcher's fds and memory flat and nothing behind. The smaller
version of `bench/restarts.py` (1,000 restarts there, figures in bench/RESULTS.md): 50 real restarts of the
real stack through SIGHUP, each answered once the new app is ready."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import REPO

COUNT = 50


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "restarts.py"), "--count", str(COUNT), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_restarts_leave_no_orphan_no_zombie_and_flat_memory(figures: dict[str, Any]) -> None:
    assert figures["restarts"] == COUNT
    assert figures["zombies"] == 0
    assert figures["app_group_at_end"] == figures["app_group_at_start"]  # no old workers piling up
    assert figures["left_after_stop"] == 0 and figures["exit_code"] == 0
    assert figures["rss_growth_kb"] <= 2048, figures


def test_restarts_leave_the_fd_count_flat(figures: dict[str, Any]) -> None:
    assert figures["fd_growth"] <= 1, figures
