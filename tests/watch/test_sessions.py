"""The session audit's records and rule, pure: what counts as ONNX Runtime's own word that the app runs on the
CPU, and how a line of ORT's that comes first is taken up by the session's record (one incident, naming the
model and the process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.preflight.appenv import AUDIT_DIR, AUDIT_SOCKET_VARIABLE, audit_environment
from launcher.watch.sessions import KEPT, SESSION_WAIT, Session, SessionBook, SessionEvidence, cpu_fallback, parse
from launcher.watch.watchdog import CPU_FALLBACK, STOP, WARN, Incident

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def record(**fields: object) -> bytes:
    base = {"pid": 1, "model": "/models/dinet.onnx", "requested": [CUDA], "providers": [CPU], "error": None}
    return json.dumps({**base, **fields}).encode()


def session(**fields: object) -> Session:
    got = parse(record(**fields), "app", 4242, 100.0)
    assert got is not None
    return got


def test_a_record_is_read_with_the_kernels_pid_not_its_own() -> None:
    got = session(pid=1)
    assert (got.pid, got.app, got.model, got.requested, got.providers) == (
        4242,
        "app",
        "/models/dinet.onnx",
        (CUDA,),
        (CPU,),
    )


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", json.dumps({"model": 3}).encode(), b"\xff\xfe"])
def test_what_is_not_a_record_is_none(data: bytes) -> None:
    assert parse(data, "app", 1, 0.0) is None


@pytest.mark.parametrize(
    ("fields", "required", "fires"),
    [
        ({"providers": [CPU]}, CUDA, True),  # asked for CUDA, got the CPU: ORT's silent fallback
        ({"providers": [CUDA, CPU]}, CUDA, False),
        ({"requested": None, "providers": [CPU]}, CUDA, True),  # ORT's default order, and still no CUDA
        ({"requested": [CPU], "providers": [CPU]}, CUDA, False),  # the app's own choice for this session
        ({"providers": [CPU]}, CPU, False),  # CPU required: nothing to guard
        ({"providers": None, "error": "CUDA_PATH is set but CUDA wasn't able to be loaded"}, CUDA, True),
        ({"providers": None, "error": "[ONNXRuntimeError] : 3 : NO_SUCHFILE"}, CUDA, False),  # the app's bug
    ],
)
def test_the_rule_reads_onnx_runtimes_own_word(fields: dict[str, object], required: str, fires: bool) -> None:
    evidence = cpu_fallback(session(**fields), required)
    assert (evidence is not None) is fires
    if evidence:
        assert "/models/dinet.onnx" in evidence and "pid 4242" in evidence


def fire_once(evidence: str, at: float) -> list[Incident]:
    return [Incident(CPU_FALLBACK, evidence, at, STOP)]


def test_orts_line_first_then_the_record_is_one_incident_naming_model_and_process() -> None:
    evidence = SessionEvidence()
    line = Incident(CPU_FALLBACK, "[W:onnxruntime] Failed to create CUDAExecutionProvider", 99.9, WARN)
    assert evidence.hold([line], 99.9) == []
    assert evidence.deadline == pytest.approx(99.9 + SESSION_WAIT)
    got = session()
    found = evidence.add(got, cpu_fallback(got, CUDA), fire_once)
    assert len(found) == 1 and found[0].action == WARN  # the action the watchdog chose for the line
    assert "pid 4242" in found[0].line and "dinet.onnx" in found[0].line and "Failed to create" in found[0].line
    assert evidence.release(1e9) == [] and evidence.deadline is None


def test_a_line_whose_record_never_comes_is_the_incident_after_the_wait() -> None:
    evidence = SessionEvidence()
    line = Incident(CPU_FALLBACK, "EP Error … Falling back to ['CPUExecutionProvider']", 10.0, STOP)
    evidence.hold([line], 10.0)
    assert evidence.release(10.0 + SESSION_WAIT / 2) == []
    assert evidence.release(10.0 + SESSION_WAIT) == [line]


def test_the_book_is_bounded_and_counts_providers() -> None:
    book = SessionBook()
    for n in range(KEPT * 10):
        book.add(session(model=f"/m/{n}.onnx", providers=[CUDA] if n % 2 else [CPU]))
    assert len(book.as_list()) == KEPT and book.as_list()[-1]["model"] == f"/m/{KEPT * 10 - 1}.onnx"
    assert book.by_provider == {CUDA: KEPT * 5, CPU: KEPT * 5}
    book.clear()
    assert book.as_list() == [] and not book.by_provider


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", [str(AUDIT_DIR)]),
        ("/app/lib", [str(AUDIT_DIR), "/app/lib"]),
        ("/a::/b:", [str(AUDIT_DIR), "/a", "/b"]),  # no empty entry: it would put the working directory on the path
        (f"{AUDIT_DIR}:/a", [str(AUDIT_DIR), "/a"]),  # a restart's environment: once
    ],
)
def test_the_audit_goes_first_on_pythonpath_and_the_apps_entries_keep_their_order(
    given: str, expected: list[str]
) -> None:
    env = audit_environment(given, Path("/run/heygem"))
    assert env["PYTHONPATH"].split(":") == expected
    assert env[AUDIT_SOCKET_VARIABLE] == "/run/heygem/sessions.sock"
    assert sorted(p.name for p in AUDIT_DIR.glob("*.py")) == ["heygem_session_audit.py", "sitecustomize.py"]
