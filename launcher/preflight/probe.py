"""Parent side of the probe: start the child with the app's exact environment, collect what it says."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import ConfigError, LaunchError
from launcher.preflight import early

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of ONNX Runtime's own logging and of its Python fallback, worth showing a person.
_ORT_LINE = re.compile(r"\[[EWF]:onnxruntime|EP Error|Falling back to|Failed to (load|create)")
# "2026-11-28 09:35:16.45 [E:onnxruntime:Default, file.cc:12 func] /src/x.cc:3 f() [ONNXRuntimeError] : 1 :
# FAIL : message" -> "E: message"
_ORT_PREFIX = re.compile(r"^.*?\[([EWF]):onnxruntime:[^\]]*\]\s*(?:.*?\[ONNXRuntimeError\] : \d+ : \w+ : )?")


# Where the cause sits in ORT's long loader and CUDA errors (ORT 1.16's cause starts ~680 characters in).
_CAUSE = re.compile(
    r"CUDA failure \d+|CUDNN failure|CUBLAS failure|cudaError\w+|[\w.+-]+\.so[\w.]*: cannot open|"
    r"Could not load library|Unable to load|with error: |undefined symbol"
)
EXCERPT_CHARS = 400


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` whole when short; else cut around its cause, never before it ('...' marks each cut)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    match = _CAUSE.search(text)
    start = 0 if match is None else match.start()
    cut = text[start : start + limit]
    return ("..." if start else "") + cut + ("..." if start + limit < len(text) else "")


# ORT's refusal of a node left on the CPU ("... explicitly disabled by the user"): probe_child.py sets
# session.disable_cpu_ep_fallback=1 itself, so that a CPU fallback is an error instead of a silent success.
NO_CPU_FALLBACK = "fallback to CPU EP has been explicitly disabled"
# ORT's words that read as if the operator had done something, where the probe itself did it on purpose:
# (a fragment of ORT's line, what it means). Shown under ORT's own line, which stays as ORT wrote it.
_GLOSSES: tuple[tuple[str, str], ...] = (
    (
        NO_CPU_FALLBACK,
        '"the user" is the probe: it sets session.disable_cpu_ep_fallback=1 on purpose, so that a node '
        "left on the CPU fails the check instead of running there silently; no setting of yours did this",
    ),
)


def gloss(message: str) -> str | None:
    """What one of ORT's lines means here, when its own words would mislead; else None."""
    return next((meaning for fragment, meaning in _GLOSSES if fragment in message), None)


def tidy(line: str) -> str:
    """One of ORT's log lines without its timestamp and source location."""
    return _ORT_PREFIX.sub(lambda m: f"{m.group(1)}: ", line.strip(), count=1)


@dataclass(frozen=True)
class ProbeResult:
    """What the probe child said: its exit code, its report (one JSON object), its output."""

    returncode: int | None  # None: killed at the timeout
    timed_out: bool
    report: dict[str, Any]
    output: str  # the child's stderr and stdout, ANSI colours removed
    elapsed_s: float
    ort_messages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.report.get("ok"))

    @property
    def ort_notes(self) -> tuple[tuple[str, str], ...]:
        """(ORT's message, what it means here) for each message whose own words would mislead."""
        return tuple((m, note) for m in self.ort_messages if (note := gloss(m)) is not None)


# Plain files next to this module: the package is always installed unzipped (pip, setuptools).
CHILD = Path(early.CHILD)
MODEL = Path(early.MODEL)


def child_source() -> str:
    return CHILD.read_text(encoding="utf-8")


class _EarlyFolder:
    """The early probe's report folder, behind TemporaryDirectory's `name` and `cleanup()`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def cleanup(self) -> None:
        early.remove_folder(self.name)


class _Adopted:
    """The early probe's process behind the part of subprocess.Popen's interface ProbeRun uses: `pid`,
    `communicate` (its output until EOF, TimeoutExpired at the timeout with what came so far), `kill`, `wait`,
    `returncode` (-N for a signal, as Popen's)."""

    def __init__(self, probe: early.EarlyProbe) -> None:
        self.probe, self.pid, self.returncode = probe, probe.pid, None
        self._chunks: list[bytes] = []

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.probe.output >= 0:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.probe.python, timeout or 0.0, b"".join(self._chunks))
            ready, _, _ = select.select([self.probe.output], [], [], left)
            if ready:
                chunk = os.read(self.probe.output, 65536)
                self._chunks.append(chunk) if chunk else self.probe.close_output()
        self.wait()
        return b"".join(self._chunks), None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.probe.close_output()


# Once the probe's group is killed, how long (s) an escaped descendant may still hold its output open.
HELD_OUTPUT_S = 3.0
CUT = b"\n(heygem-launch: output cut: a process the probe started outside its group held it open)\n"


def _drain(proc: subprocess.Popen[bytes] | _Adopted) -> bytes:
    """The rest of a killed probe's output, read for at most HELD_OUTPUT_S: its group is dead, so a writer still
    holding the pipe escaped it, and the preflight must not wait on it (its timeout is the setting's)."""
    try:
        out, _ = proc.communicate(timeout=HELD_OUTPUT_S)
        return out
    except subprocess.TimeoutExpired as exc:
        if isinstance(proc, _Adopted):
            proc.probe.close_output()
        elif proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
        return (exc.output or b"") + CUT


def _kill_group(proc: subprocess.Popen[bytes] | _Adopted) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# Probes running now (the service runs a restart's preflight in a thread): a stop must kill them all, since
# each runs in its own session, out of reach of tini's and the terminal's group signals.
_RUNNING: set[ProbeRun] = set()


_CLOSED = threading.Event()


def kill_running() -> int:
    """SIGKILL the process group of every probe still running; how many there were. The process is stopping
    (or its preflight was interrupted): from now on a probe that a thread is about to start is refused
    (ProbeRun raises LaunchError) instead of running until its timeout."""
    _CLOSED.set()
    early.discard()
    runs = list(_RUNNING)
    for run in runs:
        run.kill()
    return len(runs)


class ProbeRun:
    """A started probe; `wait()` collects it. Started first, so the parent's own checks overlap its start-up.
    Whatever interrupts the parent (SIGTERM raised as an exception, an error) kills the probe's group."""

    def __init__(self, python: Path, env: dict[str, str], cwd: Path, provider: str, timeout: float) -> None:
        if _CLOSED.is_set():
            raise LaunchError("heygem-launch is stopping: no probe is started")
        adopted = early.claim(str(python), provider, env, str(cwd))
        if adopted is not None:
            # The early probe is this very probe, started before the settings were read (early.py).
            self._started = adopted.started
            self._tmp: tempfile.TemporaryDirectory[str] | _EarlyFolder = _EarlyFolder(adopted.folder)
            self._report_path = adopted.report
            self._proc: subprocess.Popen[bytes] | _Adopted = _Adopted(adopted)
        else:
            self._started = time.monotonic()
            self._tmp = tempfile.TemporaryDirectory(prefix="heygem-probe-")
            self._report_path = os.path.join(self._tmp.name, "report.json")
            self._proc = self._spawn(python, env, cwd, provider)
        self._deadline = self._started + timeout
        _RUNNING.add(self)
        if _CLOSED.is_set():  # closed while we started: kill_running may have missed us
            self.kill()
            raise LaunchError("heygem-launch is stopping: no probe is started")

    def _spawn(self, python: Path, env: dict[str, str], cwd: Path, provider: str) -> subprocess.Popen[bytes]:
        # `python -` in the app dir: sys.path[0] is the app dir, as for `python app.py`. Its own session:
        # a hung probe is killed with anything it started.
        try:
            proc = subprocess.Popen(
                [str(python), "-", self._report_path, str(MODEL), provider, self._tmp.name],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # not executable, not a program (no shebang, a folder), its interpreter missing
            self._tmp.cleanup()
            raise ConfigError(
                f"the app's python {python} cannot be started: {exc.strerror or exc} (HEYGEM_CONDA_ENV names its env)"
            ) from None
        # The script fits in the pipe's buffer: hand it over now, so the child runs while we do our checks.
        assert proc.stdin is not None
        try:
            proc.stdin.write(child_source().encode())
            proc.stdin.close()
        except BrokenPipeError:
            # The probe's python died before it read its script (a broken env: a bad PYTHONHOME set by an
            # activate.d script, a python that is not one). That is the probe's result, which wait() collects
            # with its output. Escaping, the error would be click's EPIPE: a silent exit 1.
            with contextlib.suppress(OSError):
                proc.stdin.close()
        except BaseException:
            _kill_group(proc)
            proc.kill()
            proc.wait()
            self._tmp.cleanup()
            raise
        proc.stdin = None
        return proc

    def kill(self) -> None:
        """Kill the probe's whole group and collect it (idempotent)."""
        _kill_group(self._proc)
        with contextlib.suppress(Exception):
            self._proc.kill()
            self._proc.wait(timeout=5)
        _RUNNING.discard(self)
        self._tmp.cleanup()

    def wait(self) -> ProbeResult:
        proc = self._proc
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # Timed out, unless the probe itself ended and only something it started outside its group (a
            # setsid'd child) holds the output open.
            timed_out = proc.poll() is None
            _kill_group(proc)
            out = _drain(proc)
        except BaseException:
            self.kill()
            raise
        else:
            _kill_group(proc)  # nothing the probe started may outlive it
        _RUNNING.discard(self)
        try:
            with open(self._report_path) as handle:
                report = json.load(handle)
        except (OSError, ValueError):
            report = {}
        finally:
            self._tmp.cleanup()
        output = _ANSI.sub("", out.decode(errors="replace"))
        messages = tuple(tidy(line) for line in output.splitlines() if _ORT_LINE.search(line))
        return ProbeResult(
            None if timed_out else proc.returncode,
            timed_out,
            report,
            output,
            round(time.monotonic() - self._started, 3),
            messages,
        )
