"""The probe's parent side with real child processes."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.preflight import probe
from launcher.preflight.probe import ProbeRun

START = time.time()


def test_a_python_that_dies_before_reading_its_script_is_a_failed_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken env's python (here a script that closes its stdin and exits 1, as python does under a bad
    PYTHONHOME) makes the write of the probe's script fail with EPIPE. That must be the probe's result, never
    an exception: click turns a BrokenPipeError into a silent exit 1 (seen with HEYGEM_GPUS, where one GPU's
    activate.d script broke its python). A script larger than a pipe's buffer makes the EPIPE certain."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexec 0<&-\necho 'Fatal Python error: init_fs_encoding' >&2\nexit 1\n")
    python.chmod(0o755)
    monkeypatch.setattr(probe, "child_source", lambda: "#" * 2**20)
    result = ProbeRun(python, {"PATH": "/usr/bin:/bin"}, tmp_path, "CPUExecutionProvider", 30).wait()
    assert result.returncode == 1 and not result.timed_out
    assert "Fatal Python error" in result.output and result.report == {}


def test_a_python_that_cannot_be_started_is_a_config_error(tmp_path: Path) -> None:
    """Not a program (no shebang), not executable, a folder: one line naming it, 78, no internal error (70)."""
    cases = {"no-shebang": ("text\n", 0o755), "not-executable": ("#!/bin/sh\n", 0o644)}
    for name, (text, mode) in cases.items():
        python = tmp_path / name
        python.write_text(text)
        python.chmod(mode)
        with pytest.raises(ConfigError, match=f"the app's python {python} cannot be started"):
            ProbeRun(python, {"PATH": "/usr/bin:/bin"}, tmp_path, "CPUExecutionProvider", 30)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="cannot be started"):
        ProbeRun(tmp_path / "folder", {"PATH": "/usr/bin:/bin"}, tmp_path, "CPUExecutionProvider", 30)
    assert not [p for p in Path(tempfile.gettempdir()).glob("heygem-probe-*") if p.stat().st_mtime > START]


def test_output_held_by_an_escaped_child_does_not_hold_the_preflight(tmp_path: Path) -> None:
    """A probe python that leaves a child in a session of its own holding its output (out of reach of the group
    kill): the preflight waits for it at most HELD_OUTPUT_S beyond the timeout, says the output was cut, and the
    probe's own exit is its result (it ended, it did not time out)."""
    marker = f"59.{time.time_ns() % 10**9:09d}"  # seconds for sleep, and a name pkill finds
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho started\nsetsid sleep {marker} &\nexit 3\n")
    python.chmod(0o755)
    began = time.monotonic()
    try:
        result = ProbeRun(python, {"PATH": "/usr/bin:/bin"}, tmp_path, "CPUExecutionProvider", 2).wait()
        assert time.monotonic() - began < 2 + probe.HELD_OUTPUT_S + 3
        assert result.returncode == 3 and not result.timed_out
        assert "started" in result.output and "output cut" in result.output
    finally:
        subprocess.run(["pkill", "-f", marker], check=False)
