"""The session audit (launcher/preflight/audit/sitecustomize.py) inside real ONNX Runtime processes: onnxruntime-gpu
1.16.3 on Python 3.8 (HeyGem's pin), 1.31 on 3.11, and the CPU `onnxruntime` wheel. It changes nothing the app
sees (sys.path, the class, exceptions, results), reports each session's providers from ONNX Runtime itself,
runs the app's own sitecustomize, and does nothing in a process that never imports onnxruntime. No GPU here:
asking for CUDA gives a CPU session, which is exactly what the audit must report. Envs are cached (slow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from launcher.preflight.appenv import AUDIT_DIR, AUDIT_SOCKET_VARIABLE
from launcher.system.datagrams import DatagramInbox
from tests import envs
from tests.conftest import clean_environ
from tests.harness import wait_for

pytestmark = pytest.mark.slow

MODEL = Path(__file__).resolve().parents[2] / "launcher" / "preflight" / "data" / "probe.onnx"
# What the app could see of the audit: its path, the class, an exception, a result.
SEEN = r"""
import json, sys
import numpy as np
import onnxruntime as ort
asked = [("CUDAExecutionProvider", {"device_id": 0})] if "ask" in sys.argv else None
s = ort.InferenceSession(sys.argv[1], providers=asked)
feeds = {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in s.get_inputs()}
try:
    ort.InferenceSession("/nonexistent/model.onnx", providers=["CPUExecutionProvider"])
    error = None
except Exception as exc:
    error = [type(exc).__module__, type(exc).__name__, str(exc)]
print(json.dumps({
    "path": sys.path,
    "cls": [ort.InferenceSession.__module__, ort.InferenceSession.__qualname__, ort.InferenceSession.__init__.__name__],
    "same_class": type(s) is ort.capi.onnxruntime_inference_collection.InferenceSession,
    "providers": s.get_providers(),
    "result": [float(x.sum()) for x in s.run(None, feeds)],
    "error": error,
    "sitecustomize": getattr(sys.modules.get("sitecustomize"), "__file__", None),
}))
"""
CPU_ONLY_ENV = "cpu-ort"


@pytest.fixture(scope="module", params=["1.16-py3.8", "1.31-cuda13", CPU_ONLY_ENV])
def env_python(request: pytest.FixtureRequest, cpu_ort_env: Path) -> Path:
    if request.param == CPU_ONLY_ENV:
        return cpu_ort_env / "bin" / "python"
    build = next(b for b in envs.BUILDS if b.name == request.param)
    if build.interpreter() is None:
        pytest.skip(f"no interpreter for {build.name} (pyenv has Python 3.8 on the project's machines)")
    return envs.build_env(build, "gpu") / "bin" / "python"


def run(python: Path, code: str, *args: str, audit: str | None, cwd: Path, **extra: str) -> dict:  # type: ignore[type-arg]
    env = clean_environ(**extra)
    if audit is not None:
        env["PYTHONPATH"] = ":".join(p for p in (str(AUDIT_DIR), env.get("PYTHONPATH", "")) if p)
        env[AUDIT_SOCKET_VARIABLE] = audit
    done = subprocess.run(
        [str(python), "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_app_sees_the_same_and_onnx_runtime_reports_each_session(env_python: Path, tmp_path: Path) -> None:
    inbox = DatagramInbox(tmp_path / "sessions.sock")
    try:
        plain = run(env_python, SEEN, str(MODEL), "ask", audit=None, cwd=tmp_path)
        audited = run(env_python, SEEN, str(MODEL), "ask", audit=str(inbox.path), cwd=tmp_path)
        records = [json.loads(d.data) for d in wait_for(lambda: inbox.receive() or None, 10, "the records")]
    finally:
        inbox.close()
    assert {k: v for k, v in audited.items() if k != "sitecustomize"} == {
        k: v for k, v in plain.items() if k != "sitecustomize"
    }
    assert audited["same_class"] and audited["cls"][2] == "__init__"
    assert not any("audit" in p for p in audited["path"])
    assert audited["providers"] == ["CPUExecutionProvider"]  # no CUDA here: ORT's silent fallback
    good, failed = sorted(records, key=lambda r: r["error"] is not None)
    assert good["model"] == str(MODEL) and good["requested"] == ["CUDAExecutionProvider"]
    assert good["providers"] == ["CPUExecutionProvider"] and good["error"] is None
    assert failed["model"] == "/nonexistent/model.onnx" and failed["providers"] is None
    assert failed["error"] and "\n" not in failed["error"]


def test_the_apps_own_sitecustomize_still_runs(env_python: Path, tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text(f"open({str(tmp_path / 'marker')!r}, 'w').write('ran')\n")
    inbox = DatagramInbox(tmp_path / "sessions.sock")
    try:
        seen = run(env_python, SEEN, str(MODEL), "ask", audit=str(inbox.path), cwd=tmp_path, PYTHONPATH=str(own))
        assert wait_for(lambda: inbox.receive() or None, 10, "the records")
    finally:
        inbox.close()
    assert (tmp_path / "marker").read_text() == "ran"
    assert seen["sitecustomize"] == str(own / "sitecustomize.py")
    assert seen["path"].count(str(own)) == 1 and not any("audit" in p for p in seen["path"])


def test_a_process_that_never_imports_onnxruntime_sends_nothing(env_python: Path, tmp_path: Path) -> None:
    inbox = DatagramInbox(tmp_path / "sessions.sock")
    try:
        seen = run(
            env_python, "import json, sys; print(json.dumps(sorted(sys.modules)))", audit=str(inbox.path), cwd=tmp_path
        )
        assert inbox.receive() == []
    finally:
        inbox.close()
    assert not [m for m in seen if m.startswith("onnxruntime")]


def test_cuda_path_set_on_1_16_raises_at_creation_and_the_record_says_why(tmp_path: Path) -> None:
    """onnxruntime-gpu up to 1.18 raises at session creation when CUDA_PATH is set and the CUDA provider does not
    load (pybind's CreateExecutionProviderInstance; removed in 1.19, microsoft/onnxruntime PR #21425): checked
    here on 1.16.3 for real. The audit reports the exception's first line; the app gets the exception as is."""
    build = next(b for b in envs.BUILDS if b.name == "1.16-py3.8")
    if build.interpreter() is None:
        pytest.skip("no Python 3.8 (pyenv has it on the project's machines)")
    python = envs.build_env(build, "gpu") / "bin" / "python"
    code = (
        "import json, sys, onnxruntime as ort\n"
        "try:\n    ort.InferenceSession(sys.argv[1], providers=['CUDAExecutionProvider'])\n"
        "except Exception as exc:\n    print(json.dumps([type(exc).__name__, str(exc).splitlines()[0]]))\n"
    )
    inbox = DatagramInbox(tmp_path / "sessions.sock")
    try:
        raised = run(python, code, str(MODEL), audit=str(inbox.path), cwd=tmp_path, CUDA_PATH=os.devnull)
        records = [json.loads(d.data) for d in wait_for(lambda: inbox.receive() or None, 10, "the record")]
    finally:
        inbox.close()
    assert raised[0] == "RuntimeError" and "CUDA_PATH is set but CUDA wasn't able to be loaded" in raised[1]
    assert records[0]["providers"] is None and "CUDA_PATH is set" in records[0]["error"]
