"""The session audit's cost (launcher/preflight/audit/sitecustomize.py): at interpreter start, per session
creation and per run(), with against without, interleaved, medians; on HeyGem's build (onnxruntime-gpu 1.16.3,
Python 3.8, the tests' cached env) and on this venv's (1.31, Python 3.11). Target: under 5 ms at start, nothing
measurable per run()."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.preflight.appenv import AUDIT_DIR, AUDIT_SOCKET_VARIABLE  # noqa: E402
from launcher.system.datagrams import DatagramInbox  # noqa: E402

MODEL = REPO / "launcher" / "preflight" / "data" / "probe.onnx"
SESSIONS = r"""
import sys, time
import numpy as np, onnxruntime as ort
n, runs = int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
for _ in range(n):
    s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
made = time.perf_counter()
feeds = {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in s.get_inputs()}
for _ in range(runs):
    s.run(None, feeds)
print((made - start) / n, (time.perf_counter() - made) / runs)
"""


def _env(audit: Path | None) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", AUDIT_SOCKET_VARIABLE)}
    if audit is not None:
        env.update({"PYTHONPATH": str(AUDIT_DIR), AUDIT_SOCKET_VARIABLE: str(audit)})
    return env


def _start_s(python: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - began


def measure(python: str, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        inbox = DatagramInbox(Path(tmp) / "sessions.sock")
        plain, audited = _env(None), _env(inbox.path)
        starts: dict[str, list[float]] = {"without": [], "with": []}
        per: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        for _ in range(rounds * 4):
            starts["without"].append(_start_s(python, plain))
            starts["with"].append(_start_s(python, audited))
        for _ in range(max(3, rounds // 3)):
            for name, env in (("without", plain), ("with", audited)):
                out = subprocess.run(
                    [python, "-c", SESSIONS, str(MODEL), "100", "2000"], env=env, capture_output=True, text=True
                )
                session_s, run_s = map(float, out.stdout.split())
                per[name].append((session_s, run_s))
                inbox.receive()
        inbox.close()
    ms = {k: statistics.median(v) * 1000 for k, v in starts.items()}
    session = {k: statistics.median(s for s, _r in v) * 1000 for k, v in per.items()}
    run = {k: statistics.median(r for _s, r in v) * 1e6 for k, v in per.items()}
    start_cost = ms["with"] - ms["without"]
    return {
        "start_ms": {k: round(v, 2) for k, v in ms.items()},
        "start_cost_ms": round(start_cost, 2),
        "session_ms": {k: round(v, 3) for k, v in session.items()},
        "session_cost_ms": round(session["with"] - session["without"], 3),
        "run_us": {k: round(v, 1) for k, v in run.items()},
        "pass": start_cost < 5.0,
    }


def bench_audit(rounds: int) -> dict[str, object]:
    from tests import envs

    build = envs.BUILDS[0]
    heygem = str(envs.build_env(build, "gpu") / "bin" / "python")
    results = {"1.16.3 / Python 3.8": measure(heygem, rounds), "1.31 / Python 3.11": measure(sys.executable, rounds)}
    return {**results, "pass": all(r["pass"] for r in results.values())}
