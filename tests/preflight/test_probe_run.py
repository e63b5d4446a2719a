"""The probe's parent side with real child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.preflight import probe
from launcher.preflight.probe import ProbeRun


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
