"""Parent side of the probe: start the child with the app's exact environment, collect what it says."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of ONNX Runtime's own logging and of its Python fallback, worth showing a person.
_ORT_LINE = re.compile(r"\[[EWF]:onnxruntime|EP Error|Falling back to|Failed to (load|create)")
# "2026-11-28 09:35:16.45 [E:onnxruntime:Default, file.cc:12 func] /src/x.cc:3 f() [ONNXRuntimeError] : 1 :
# FAIL : message" -> "E: message"
_ORT_PREFIX = re.compile(r"^.*?\[([EWF]):onnxruntime:[^\]]*\]\s*(?:.*?\[ONNXRuntimeError\] : \d+ : \w+ : )?")


def tidy(line: str) -> str:
    """One of ORT's log lines without its timestamp and source location."""
    return _ORT_PREFIX.sub(lambda m: f"{m.group(1)}: ", line.strip(), count=1)


@dataclass(frozen=True)
class ProbeResult:
    returncode: int | None  # None: killed at the timeout
    timed_out: bool
    report: dict[str, Any]
    output: str  # the child's stderr and stdout, ANSI colours removed
    elapsed_s: float
    ort_messages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.report.get("ok"))


def child_source() -> str:
    return resources.files("launcher").joinpath("probe_child.py").read_text(encoding="utf-8")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_probe(python: Path, env: dict[str, str], cwd: Path, provider: str, timeout: float) -> ProbeResult:
    """Run probe_child.py as `python -` in the app dir, so sys.path[0] is the app dir, as for `python app.py`."""
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="heygem-probe-") as tmp,
        resources.as_file(resources.files("launcher").joinpath("data/probe.onnx")) as model,
    ):
        report_path = os.path.join(tmp, "report.json")
        # Its own session: a hung probe is killed with anything it started.
        proc = subprocess.Popen(
            [str(python), "-", report_path, str(model), provider, tmp],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, _ = proc.communicate(child_source().encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, _ = proc.communicate()
        else:
            _kill_group(proc)  # nothing the probe started may outlive it
        try:
            with open(report_path) as handle:
                report = json.load(handle)
        except (OSError, ValueError):
            report = {}
    output = _ANSI.sub("", out.decode(errors="replace"))
    messages = tuple(tidy(line) for line in output.splitlines() if _ORT_LINE.search(line))
    return ProbeResult(
        None if timed_out else proc.returncode,
        timed_out,
        report,
        output,
        round(time.monotonic() - started, 3),
        messages,
    )
