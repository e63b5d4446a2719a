"""`heygem-launch --check-only` against real onnxruntime-gpu builds: 1.16 on Python 3.8 (HeyGem's), a CUDA 12
build and 1.31 (CUDA 13), each cause reproduced for real on this machine (no GPU, no driver).

What is real: the onnxruntime-gpu wheels from PyPI and their provider libraries, NVIDIA's libcudart wheel for
the build's CUDA major, the probe in the env's own Python, the loader. What stands in: cuBLAS, cuDNN, cuRAND,
cuFFT (and nvrtc), made from the provider's own imports (tests/stubelf.py), because no CPU machine can run
them; ORT calls none of them before it reaches the driver. Envs are cached (tests/envs.py); marked `slow`
because a cold cache downloads the wheels, and run by scripts/test.sh all the same.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launcher.preflight import causes
from tests import envs, stubelf
from tests.conftest import LAUNCH, assert_no_traceback

pytestmark = pytest.mark.slow

NEEDED_TOOLKIT = {  # a soname each build NEEDs, and NVIDIA's wheel that provides it
    "1.16-py3.8": ("libcublasLt.so.11", "nvidia-cublas-cu11"),
    "1.20-cuda12": ("libcublasLt.so.12", "nvidia-cublas-cu12"),
    "1.31-cuda13": ("libcublasLt.so.13", "'nvidia-cublas==13.*'"),
}
CUDNN_WHEN = {  # 1.16 and 1.20 NEED cuDNN; 1.31 opens it at run time (FIELD.md section 3)
    "1.16-py3.8": "so the provider does not load at all",
    "1.20-cuda12": "so the provider does not load at all",
    "1.31-cuda13": "when a Conv first runs",
}


@pytest.fixture(scope="module", params=envs.BUILDS, ids=[b.name for b in envs.BUILDS])
def build(request: pytest.FixtureRequest) -> envs.Build:
    b: envs.Build = request.param
    if b.interpreter() is None:
        pytest.skip(f"no interpreter for {b.name} (pyenv has Python 3.8 on the project's machines)")
    if stubelf.cc() is None:
        pytest.skip("no C compiler to build stand-in CUDA libraries")
    return b


@pytest.fixture(scope="module")
def gpu_env(build: envs.Build) -> Path:
    return envs.build_env(build, "gpu")


def check(launch, prefix: Path, *args: str, extra: Path | None = None):  # type: ignore[no-untyped-def]
    env = {"HEYGEM_EXTRA_LIBRARY_PATH": str(extra)} if extra else {}
    run = launch("--check-only", "--json", "--conda-env", str(prefix), *args, env=env)
    assert_no_traceback(run)
    return run


def refused(launch, build: envs.Build, prefix: Path, stand_ins: str | None, cause: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The check of `prefix` with the build's stand-in CUDA libraries ("full", "no-cudnn" or none): exit 69, `cause`."""
    run = check(launch, prefix, extra=envs.stand_ins(build, prefix, stand_ins) if stand_ins else None)
    assert run.returncode == 69, run.stdout
    doc = run.json
    assert doc["cause"] == cause, doc["message"]
    return doc


def test_identity_without_build_info(launch, build: envs.Build, gpu_env: Path) -> None:
    """Version from the dist metadata, CUDA major from libcudart.so.N, cuDNN major from libcudnn.so.N."""
    doc = check(launch, gpu_env).json
    ort = doc["onnxruntime"]
    assert ort["version"] == build.version
    assert ort["cuda_major"] == build.cuda_major and ort["cudnn_major"] == build.cudnn_major
    assert ort["identity"].startswith(f"onnxruntime-gpu {build.version} (CUDA {build.cuda_major}")
    assert f"cuDNN {build.cudnn_major})" in ort["identity"]
    run = launch("--check-only", "--conda-env", str(gpu_env))
    assert f"ONNX Runtime: {ort['identity']}" in run.stdout


def test_cuda_libraries_missing_names_the_builds_sonames_and_packages(launch, build: envs.Build, gpu_env) -> None:
    doc = refused(launch, build, gpu_env, None, causes.CUDA_LIBRARIES_MISSING)
    soname, wheel = NEEDED_TOOLKIT[build.name]
    assert soname in doc["message"] and f"CUDA {build.cuda_major}" in doc["message"]
    assert wheel in doc["fix"] and "conda install" in doc["fix"]
    # No driver here either: the fix says so, so that it is not the next surprise.
    assert "libcuda.so.1" in doc["message"] and "--gpus all" in doc["fix"]
    # ORT agrees: its loader error names a library of the build, shown whole or cut around its cause.
    assert any("cannot open shared object file" in m for m in doc["probe"]["ort_messages"])


def test_cudnn_missing(launch, build: envs.Build, gpu_env: Path) -> None:
    doc = refused(launch, build, gpu_env, "no-cudnn", causes.CUDNN_MISSING)
    assert f"libcudnn.so.{build.cudnn_major}" in doc["message"] and f"cuDNN {build.cudnn_major}" in doc["message"]
    assert CUDNN_WHEN[build.name] in doc["message"]
    assert f"nvidia-cudnn-cu{build.cuda_major}=={build.cudnn_major}.*" in doc["fix"]
    assert f"cudnn={build.cudnn_major}" in doc["fix"]


def test_driver_missing_with_every_cuda_library_present(launch, build: envs.Build, gpu_env: Path) -> None:
    doc = refused(launch, build, gpu_env, "full", causes.DRIVER_MISSING)
    assert "--gpus" in doc["fix"]
    assert all(row["path"] for row in doc["libraries"] if row["kind"] != "driver" and not row["optional"])
    output = "\n".join(doc["probe"]["ort_messages"])
    if build.name.startswith("1.16"):
        # 1.16 reaches the driver through libcudart and words its absence as an old driver (seen).
        assert "driver version is insufficient" in output
        assert "its text for no driver too" in doc["message"]
    else:
        assert "libcuda.so.1: cannot open shared object file" in output


def test_report_shows_the_loader_error_at_its_cause(launch, build: envs.Build, gpu_env: Path) -> None:
    run = launch(
        "--check-only",
        "--conda-env",
        str(gpu_env),
        env={"HEYGEM_EXTRA_LIBRARY_PATH": str(envs.stand_ins(build, gpu_env, "full"))},
    )
    assert f"REFUSED [{causes.DRIVER_MISSING}]" in run.stdout and "--gpus" in run.stdout
    shown = "\n".join(line for line in run.stdout.splitlines() if line.startswith("  | "))
    assert ("CUDA failure 35" if build.name.startswith("1.16") else "libcuda.so.1: cannot open") in shown
    # Where ORT blames "the user" for the probe's own disable_cpu_ep_fallback, the next line says whose it is.
    lines = run.stdout.splitlines()
    for at in (i for i, line in enumerate(lines) if line.startswith("  | ") and "explicitly disabled" in line):
        assert lines[at + 1].startswith("    ^ ") and "session.disable_cpu_ep_fallback=1" in lines[at + 1]


def test_cpu_package_over_the_gpu_one(launch, build: envs.Build) -> None:
    prefix = envs.build_env(build, "cpu-over-gpu")
    doc = check(launch, prefix).json
    assert doc["cause"] == causes.ONNXRUNTIME_CPU_ONLY
    assert "installed over `onnxruntime-gpu`" in doc["message"]
    assert "CPUExecutionProvider" in doc["message"]  # what the probe's onnxruntime offers
    assert f"onnxruntime-gpu=={build.version}" in doc["fix"]


def test_gpu_package_over_the_cpu_one_reports_what_the_probe_found(launch, build: envs.Build) -> None:
    prefix = envs.build_env(build, "gpu-over-cpu")
    doc = check(launch, prefix).json
    # The GPU package's files won: the real problem (the libraries) is shown, not the metadata's.
    assert doc["cause"] == causes.CUDA_LIBRARIES_MISSING, doc["message"]
    assert any("CUDAExecutionProvider" in w and "both" in w for w in doc["warnings"])


def test_cpu_provider_passes_in_the_builds_python(launch, build: envs.Build, gpu_env: Path) -> None:
    run = check(launch, gpu_env, "--require-provider", "CPUExecutionProvider")
    assert run.returncode == 0, run.stdout
    assert run.json["libraries_apply"] is False  # the CUDA table, missing or not, decides nothing here
    report = run.json["probe"]["report"]
    assert report["node_providers"] == {"Conv": "CPUExecutionProvider", "MatMul": "CPUExecutionProvider"}
    if build.name.startswith("1.16"):
        assert report["python"].startswith("3.8.")


def test_shared_case_16_no_driver(tmp_path: Path) -> None:
    """../shared/cases/preflight-1.16-no-driver.sh, as handed in: prints driver_missing and `--gpus`."""
    build = envs.BUILDS[0]
    if build.interpreter() is None:
        pytest.skip("no Python 3.8 (pyenv has it on the project's machines)")
    script = Path(__file__).resolve().parents[1] / "cases" / "preflight-1.16-no-driver.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYGEM_", "CONDA_")) and k != "LD_LIBRARY_PATH"}
    env.update(PY=str(build.interpreter()), W=str(tmp_path / "case"))
    env["PATH"] = f"{Path(LAUNCH[0]).parent}:{env['PATH']}"
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"REFUSED [{causes.DRIVER_MISSING}]" in out.stdout, out.stdout
    assert "--gpus" in out.stdout and "exit 69" in out.stdout
    assert "driver_too_old" not in out.stdout
