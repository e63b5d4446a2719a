"""The session audit in the running service: every ONNX Runtime session the app's processes create (its main
process and its `spawn` workers) reports the providers ONNX Runtime gave it, and a session without CUDA where
CUDA is required stops the service at once (69, provider_not_used), naming the model and the process.

Real supervisord, the HeyGem-like app on real onnxruntime-gpu (1.31 on 3.11, and 1.16.3 on Python 3.8, HeyGem's
pin) asking for CUDA as HeyGem does, on a machine without CUDA: ONNX Runtime gives each session the CPU."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from launcher.preflight.appenv import AUDIT_DIR, AUDIT_SOCKET_VARIABLE
from launcher.system import procs
from tests import envs, harness
from tests.harness import control, wait_for
from tests.watch.test_metrics import scrape

CPU = ["CPUExecutionProvider"]
CUDA_REQUIRED = {
    "HEYGEM_PREFLIGHT": "skip",
    "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider",
    "HEYGEM_GPU_GRACE": "600",  # the /proc sign must not be what acts here
    "TEST_APP_ORT": "ask-cuda",
}


@pytest.fixture(params=["1.31-py3.11", "1.16-py3.8"])
def app_env(request: pytest.FixtureRequest, ort_env: Path) -> Path:
    if request.param == "1.31-py3.11":
        return ort_env
    build = next(b for b in envs.BUILDS if b.name == "1.16-py3.8")
    if build.interpreter() is None:
        pytest.skip("no Python 3.8 (pyenv has it on the project's machines)")
    return envs.build_env(build, "gpu")


@pytest.fixture
def start(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[harness.Service] = []

    def run(conda_env: Path, **env: str) -> harness.Service:
        svc = harness.start(tmp_path, conda_env, env={"TEST_APP_SPEED": "20", **env})
        started.append(svc)
        return svc

    yield run
    for svc in started:
        svc.cleanup()


def sessions(svc: harness.Service, count: int) -> list[dict]:  # type: ignore[type-arg]
    def listed() -> list[dict] | None:  # type: ignore[type-arg]
        got = json.loads(control(svc, "status", "--json").stdout).get("sessions") or []
        return got if len(got) >= count else None

    return wait_for(listed, 60, f"{count} sessions in status --json")


def created(svc: harness.Service) -> list[tuple[int, float]]:
    """When the app's processes asked for each session (the stand-in's own stamps)."""
    path = svc.app_dir / "sessions-created.txt"
    stamps = path.read_text().split() if path.exists() else []
    return [(int(pid), float(at)) for pid, at in zip(stamps[::2], stamps[1::2], strict=True)]


def test_a_session_on_the_cpu_stops_the_service_within_2_s_naming_the_model(start, app_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(app_env, **CUDA_REQUIRED)
    code = svc.wait(60)
    ended = time.time()
    assert code == 69, svc.stderr()
    first = min(at for _pid, at in created(svc))
    assert ended - first < 2.0, f"{ended - first:.2f} s after the first session was asked for"
    line = next(line for line in svc.stderr().splitlines() if "REFUSED [provider_not_used]" in line)
    assert "probe.onnx" in line and "pid " in line and "CPUExecutionProvider" in line, line
    snapshot = json.loads(next(svc.run_dir.glob("incident-*cpu_fallback*.json")).read_text())
    assert snapshot["sessions"] and snapshot["sessions"][0]["providers"] == CPU


def test_with_warn_every_session_of_main_and_workers_is_listed_on_the_cpu(start, app_env: Path) -> None:  # type: ignore[no-untyped-def]
    metrics = harness.free_port()
    svc = start(app_env, **CUDA_REQUIRED, HEYGEM_ON_CPU_FALLBACK="warn", HEYGEM_METRICS_PORT=str(metrics))
    listed = sessions(svc, 3)  # the main process and its two spawn workers, one session each
    app_pid = svc.wait_app()["pid"]
    assert {s["pid"] for s in listed} == {pid for pid, _at in created(svc)} and app_pid in {s["pid"] for s in listed}
    assert all(s["providers"] == CPU and s["requested"] == ["CUDAExecutionProvider"] for s in listed)
    assert all(s["model"].endswith("probe.onnx") and s["app"] == "app" for s in listed)
    assert "HEYGEM_ON_CPU_FALLBACK=warn" in svc.stderr()
    assert scrape(metrics)[("heygem_onnx_sessions", (("app", "app"), ("provider", "CPUExecutionProvider")))] == 3
    text = control(svc, "status").stdout
    assert "session " in text and ": CPUExecutionProvider" in text
    doctor = control(svc, "doctor").stdout
    assert "ONNX Runtime sessions (their own word" in doctor and "probe.onnx" in doctor
    svc.assert_alive()


def test_cpu_required_no_incident_and_the_sessions_listed(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(ort_env, TEST_APP_ORT="ask-cuda")
    listed = sessions(svc, 3)
    assert all(s["providers"] == CPU for s in listed)
    assert "cpu_fallback" not in svc.stderr() and not list(svc.run_dir.glob("incident-*"))
    svc.assert_alive()


def test_a_cuda_context_held_by_torch_changes_nothing_the_audit_says(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    """HeyGem-Linux-Python-Hack#54: torch holds a CUDA context (libcuda.so.1 mapped) while ORT runs on the CPU."""
    svc = start(ort_env, **CUDA_REQUIRED, HEYGEM_ON_CPU_FALLBACK="warn", TEST_APP_TORCH="1")
    listed = sessions(svc, 3)
    pid = svc.wait_app()["pid"]
    assert any("libcuda.so" in lib for lib in procs.gpu_use(pid).libraries)  # type: ignore[union-attr]
    assert all(s["providers"] == CPU for s in listed)


def test_the_apps_own_sitecustomize_still_runs_in_every_process(start, ort_env: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text(
        f"import os\nopen({str(tmp_path / 'markers')!r}, 'a').write(str(os.getpid()) + '\\n')\n"
    )
    svc = start(ort_env, TEST_APP_ORT="ask-cuda", PYTHONPATH=str(own))
    listed = sessions(svc, 3)
    marked = {int(pid) for pid in (tmp_path / "markers").read_text().split()}
    assert {s["pid"] for s in listed} <= marked


def test_an_app_that_never_imports_onnxruntime_reports_nothing(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(ort_env, **{**CUDA_REQUIRED, "TEST_APP_ORT": "none"})
    wait_for(lambda: json.loads(control(svc, "status", "--json").stdout).get("ready"), 60, "ready")
    time.sleep(1.0)
    assert json.loads(control(svc, "status", "--json").stdout)["sessions"] == []
    assert not list(svc.run_dir.glob("incident-*"))
    svc.assert_alive()


def test_off_leaves_nothing_of_the_audit_in_the_app(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(ort_env, TEST_APP_ORT="ask-cuda", HEYGEM_SESSION_AUDIT="off")
    pid = svc.wait_app()["pid"]
    environ = procs.environ_of(pid)
    assert str(AUDIT_DIR) not in environ.get("PYTHONPATH", "") and AUDIT_SOCKET_VARIABLE not in environ
    wait_for(lambda: json.loads(control(svc, "status", "--json").stdout).get("ready"), 60, "ready")
    assert json.loads(control(svc, "status", "--json").stdout)["sessions"] == []


def test_a_record_from_outside_the_apps_groups_is_ignored(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(ort_env, **{**CUDA_REQUIRED, "TEST_APP_ORT": "none"})
    wait_for(lambda: json.loads(control(svc, "status", "--json").stdout).get("ready"), 60, "ready")
    forged = {"model": "/forged.onnx", "requested": None, "providers": CPU, "error": None, "pid": 1}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(json.dumps(forged).encode(), str(svc.run_dir / "sessions.sock"))
    wait_for(lambda: "ignored a session record from pid" in svc.stderr(), 10, "the ignored record's line")
    assert json.loads(control(svc, "status", "--json").stdout)["sessions"] == []
    svc.assert_alive()


def test_a_thousand_sessions_keep_the_launcher_bounded(start, ort_env: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start(ort_env, TEST_APP_ORT="ask-cuda", TEST_APP_SESSIONS="1000")

    def rss_kib() -> int:
        status = Path(f"/proc/{svc.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))

    wait_for(lambda: len(created(svc)) >= 300, 120, "300 sessions")
    early = rss_kib()
    wait_for(lambda: len(created(svc)) >= 3000, 300, "3,000 sessions")
    time.sleep(1.0)
    listed = json.loads(control(svc, "status", "--json").stdout)["sessions"]
    assert len(listed) == 100  # the last KEPT of the app's process generation
    assert rss_kib() - early < 4096, f"grew {rss_kib() - early} KiB over 2,700 sessions"
    svc.assert_alive()
