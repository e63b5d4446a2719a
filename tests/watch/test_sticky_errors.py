"""Sticky CUDA errors in the app's output: the rule (a table of torch's and ONNX Runtime's own texts, and the same
words where a user put them), then the real service with the HeyGem-like app printing each one for real."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from launcher.config.settings import build_settings
from launcher.watch.watchdog import CUDA_STICKY, RESTART, Watchdog
from tests import harness
from tests.harness import wait_for

C = "2265b1f5-91b7-4a1b-9c2d-cd61d8f16adf"
ORT = "2025-11-09 17:20:01.123456789 [E:onnxruntime:Default, cuda_call.cc:118 CudaCall] "

# Each sticky error as torch, cuBLAS/cuDNN through torch, and ONNX Runtime write it.
STICKY = [
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "RuntimeError: CUDA error: unspecified launch failure",
    "RuntimeError: CUDA error: uncorrectable ECC error encountered",
    "RuntimeError: CUDA error: device-side assert triggered",
    "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, opa, opb, m, n, k)`",
    "RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
    ORT + "CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; hostname=h ; expr=cudaMemcpy",
    ORT + "CUDA failure 719: unspecified launch failure ; GPU=0 ; hostname=h ; expr=cudaStreamSynchronize",
    "onnxruntime.capi.onnxruntime_pybind11_state.Fail: [ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal "
    "memory access was encountered",
    # HeyGem's own failure record, quoting the exception it caught.
    f"[2025-11-09 17:20:01] [process.py[line:108]] [ERROR] [[{C}]任务执行失败，异常信息:[CUDA error: an illegal "
    "memory access was encountered]]",
]
USER_FILE = "/data/CUDA error: an illegal memory access was encountered CUDA failure 700.wav"
# The same words where a user put them: a task's file name in HeyGem's INFO record, and printed.
NOT_STICKY = [
    f"[2025-11-09 17:20:01] [app.py[line:210]] [INFO] [任务:{C} -> audio_url:{USER_FILE}  video_url:./v.mp4]",
    f"audio_url: {USER_FILE}",
    f"{{'audio_url': '{USER_FILE}', 'code': 'CUBLAS_STATUS_EXECUTION_FAILED'}}",
]


def _dog() -> Watchdog:
    settings = build_settings({}, {"HEYGEM_STALL_SECONDS": "20"}, {}, cwd=Path("/"))
    return Watchdog(settings, fallback_guard=True)


@pytest.mark.parametrize("text", STICKY)
def test_each_sticky_error_restarts(text: str) -> None:
    found = _dog().feed(text, time.time(), "output")
    assert [(i.kind, i.action) for i in found] == [(CUDA_STICKY, RESTART)]


@pytest.mark.parametrize("text", NOT_STICKY)
def test_the_same_words_in_user_text_do_nothing(text: str) -> None:
    assert _dog().feed(text, time.time(), "output") == []


def test_once_per_app_process() -> None:
    dog = _dog()
    assert dog.feed(STICKY[0], time.time(), "output") and not dog.feed(STICKY[1], time.time(), "output")
    dog.new_instance(None)
    assert dog.feed(STICKY[1], time.time(), "output")


@pytest.mark.parametrize("text", [STICKY[0], STICKY[4], STICKY[6], STICKY[9]])
def test_the_service_restarts_the_app_within_a_second(launch_service, text: str) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service()
    first = svc.wait_app()
    wait_for(lambda: "started: pid" in svc.stderr(), 30, "the app started")
    asked = time.monotonic()
    svc.get("/emit/raw?" + urlencode({"text": text}))
    wait_for(lambda: harness.gone(first["pid"]), 5, "the old app gone")
    took = time.monotonic() - asked
    assert "incident cuda_sticky (restart)" in svc.stderr() and took < 1.0, took
    svc.wait_app(timeout=30, not_pid=first["pid"])


def test_the_service_ignores_the_words_in_a_file_name(launch_service) -> None:  # type: ignore[no-untyped-def]
    svc = launch_service()
    first = svc.wait_app()
    for text in NOT_STICKY:
        svc.get("/emit/raw?" + urlencode({"text": text}))
    time.sleep(1.5)
    assert svc.get()["pid"] == first["pid"]  # type: ignore[index]
    assert "cuda_sticky" not in svc.stderr()
