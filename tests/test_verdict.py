"""One cause per refusal.

The GPU-side states (a GPU that is hidden, a driver too old, a GPU that computes wrong numbers) cannot be
produced on a machine without a GPU, so these tests feed `decide` the facts such a machine would report:
a fake stands in for the GPU here and only here. Every state this machine can produce for real is tested
for real in test_check_refusals.py and test_cuda_wheels.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import causes
from launcher.gpu import Gpu, Inventory
from launcher.ortbuild import OrtBuild
from launcher.probe import ProbeResult
from launcher.verdict import LibraryRow, decide
from tests import envs

CUDA = "CUDAExecutionProvider"
BUILD = OrtBuild(
    Path("/env/site/onnxruntime"),
    "1.31.1",
    "onnxruntime-gpu",
    "13.0",
    Path("/env/site/onnxruntime/capi/libonnxruntime_providers_cuda.so"),
    ("onnxruntime_gpu",),
)
ALL_FOUND = tuple(
    LibraryRow(n, k, "NEEDED", path=f"/lib/{n}")
    for n, k in (("libcublas.so.13", "toolkit"), ("libcuda.so.1", "driver"), ("libcudnn.so.9", "cudnn"))
)
H200 = Inventory(True, "", "580.95.05", "13.0", (Gpu(0, "NVIDIA H200", "GPU-x", 143771, 0, 0, 0),))


def probe(stage: str = "create_session", returncode: int | None = 3, output: str = "", **report: object):
    return ProbeResult(
        returncode, returncode is None, {"stage": stage, "available_providers": [CUDA], **report}, output, 1.0
    )


def decide_with(**kw: object):
    args = {
        "required": CUDA,
        "build": BUILD,
        "libraries": ALL_FOUND,
        "gpus": H200,
        "env": {},
        "probe": probe(),
        "python": "/env/bin/python",
    }
    args.update(kw)
    return decide(**args)  # type: ignore[arg-type]


def test_passing_probe_is_ok_whatever_else() -> None:
    ok = probe("done", 0, ok=True, max_error=1e-6, node_providers={"Conv": CUDA, "MatMul": CUDA})
    assert decide_with(probe=ok).ok


@pytest.mark.parametrize("visible", ["", "-1", " "])
def test_cuda_visible_devices_hides_the_gpu(visible: str) -> None:
    v = decide_with(env={"CUDA_VISIBLE_DEVICES": visible})
    assert v.cause == causes.NO_GPU_VISIBLE and "CUDA_VISIBLE_DEVICES" in v.message


def test_driver_without_devices() -> None:
    assert decide_with(gpus=Inventory(True, "", "580.95.05", "13.0", ())).cause == causes.NO_GPU_VISIBLE


def test_driver_too_old_for_the_build() -> None:
    v = decide_with(gpus=Inventory(True, "", "550.54.15", "12.4", H200.gpus))
    assert v.cause == causes.DRIVER_TOO_OLD
    assert "580.65.06" in v.fix and "12.4" in v.message


def test_wrong_numbers_from_the_gpu() -> None:
    bad = probe(
        "done", 3, session_providers=[CUDA], max_error=3.5, tolerance=0.2, node_providers={"Conv": CUDA, "MatMul": CUDA}
    )
    assert decide_with(probe=bad).cause == causes.WRONG_RESULT


def test_a_node_on_cpu_is_provider_not_used() -> None:
    mixed = probe(
        "done",
        3,
        session_providers=[CUDA],
        max_error=0.0,
        tolerance=0.2,
        node_providers={"Conv": CUDA, "MatMul": "CPUExecutionProvider"},
    )
    v = decide_with(probe=mixed)
    assert v.cause == causes.PROVIDER_NOT_USED and "MatMul ran on CPUExecutionProvider" in v.message


def test_loader_error_names_a_library_the_table_thought_present() -> None:
    out = "E: Failed to load library x.so with error: libcublasLt.so.13: cannot open shared object file"
    v = decide_with(probe=probe(output=out))
    assert v.cause == causes.CUDA_LIBRARIES_MISSING and "libcublasLt.so.13" in v.message


def test_only_cudnn_missing() -> None:
    rows = (*ALL_FOUND[:2], LibraryRow("libcudnn.so.9", "cudnn", "run time"))
    v = decide_with(libraries=rows)
    assert v.cause == causes.CUDNN_MISSING and "nvidia-cudnn-cu13" in v.fix


def test_missing_optional_cufft_refuses_nothing() -> None:
    rows = (*ALL_FOUND, LibraryRow("libcufft.so.12", "toolkit", "run time", optional=True))
    assert decide_with(libraries=rows).cause == causes.PROBE_FAILED


def test_every_cause_has_a_message_and_a_fix() -> None:
    details = {
        k: "x"
        for k in (
            "python",
            "detail",
            "ort_version",
            "cuda_version",
            "missing",
            "wheels",
            "driver_cuda",
            "min_driver",
            "provider",
            "max_error",
            "timeout",
            "required",
        )
    }
    for cause_id in causes.ALL:
        described = causes.describe(cause_id, **details)
        assert described.message and described.fix and "\n" not in described.message + described.fix


def test_cudnn_missing_for_real(launch, cuda13_env: Path, tmp_path: Path) -> None:
    """Real: the CUDA 13 libraries without cuDNN (linked from the wheels env)."""
    prefix = envs.make_venv(tmp_path / "no-cudnn")
    envs.link_ort(prefix)
    (envs.site_of(prefix) / "nvidia").mkdir()
    (envs.site_of(prefix) / "nvidia" / "cu13").symlink_to(envs.site_of(cuda13_env) / "nvidia" / "cu13")
    run = launch("--check-only", "--json", "--conda-env", str(prefix))
    assert run.returncode == 69
    assert run.json["cause"] == causes.CUDNN_MISSING
    assert "libcudnn.so.9" in run.json["message"]
