"""Why the preflight refused: one id per cause, each with a one-line message and a one-line fix.

The ids are part of the `--json` contract and are documented in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

ONNXRUNTIME_MISSING = "onnxruntime_missing"
ONNXRUNTIME_CPU_ONLY = "onnxruntime_cpu_only"
CUDA_LIBRARIES_MISSING = "cuda_libraries_missing"
DRIVER_MISSING = "driver_missing"
NO_GPU_VISIBLE = "no_gpu_visible"
DRIVER_TOO_OLD = "driver_too_old"
CUDNN_MISSING = "cudnn_missing"
WRONG_RESULT = "wrong_result"
PROBE_TIMEOUT = "probe_timeout"
PROBE_FAILED = "probe_failed"
PROVIDER_NOT_USED = "provider_not_used"


@dataclass(frozen=True)
class Cause:
    id: str
    message: str
    fix: str


# Templates are filled with str.format(**details); every key they use is always supplied by the verdict.
_TEMPLATES: dict[str, tuple[str, str]] = {
    ONNXRUNTIME_MISSING: (
        "onnxruntime cannot be imported by the app's python ({python})",
        "install the build the app pins into that env, e.g. `{python} -m pip install onnxruntime-gpu==<pin>`",
    ),
    ONNXRUNTIME_CPU_ONLY: (
        "the app's env has the CPU-only `onnxruntime` package ({detail}): it has no CUDA provider",
        "`{python} -m pip uninstall -y onnxruntime onnxruntime-gpu && {python} -m pip install onnxruntime-gpu==<pin>`",
    ),
    CUDA_LIBRARIES_MISSING: (
        "CUDA libraries needed by onnxruntime-gpu {ort_version} (CUDA {cuda_version}) do not resolve: {missing}",
        "install them in the env (NVIDIA's wheels, e.g. {wheels}, or conda's cuda-toolkit) or add their "
        "folder to HEYGEM_EXTRA_LIBRARY_PATH",
    ),
    DRIVER_MISSING: (
        "libcuda.so.1 is not present: the container runs without the NVIDIA driver",
        "start the container with the NVIDIA runtime: `docker run --gpus all ...` or a compose GPU reservation",
    ),
    NO_GPU_VISIBLE: (
        "the NVIDIA driver is present but no GPU is visible to the app ({detail})",
        "unset or correct CUDA_VISIBLE_DEVICES and give the container a GPU (`--gpus all`)",
    ),
    DRIVER_TOO_OLD: (
        "the driver supports CUDA {driver_cuda} but onnxruntime-gpu {ort_version} needs CUDA {cuda_version}",
        "upgrade the host driver to >= {min_driver}, or install an onnxruntime-gpu build for CUDA {driver_cuda}",
    ),
    CUDNN_MISSING: (
        "cuDNN ({missing}) does not resolve; ONNX Runtime opens it only when a Conv runs",
        "install cuDNN for CUDA {cuda_version} in the env (e.g. {wheels}) or add its folder to "
        "HEYGEM_EXTRA_LIBRARY_PATH",
    ),
    WRONG_RESULT: (
        "the probe ran on {provider} but its output differs from numpy's (max error {max_error})",
        "check the GPU's health (`nvidia-smi -q`, ECC errors) and the CUDA/cuDNN versions against the build",
    ),
    PROBE_TIMEOUT: (
        "the probe did not finish within {timeout} s",
        "check for a hung GPU or driver (`nvidia-smi`), or raise HEYGEM_PREFLIGHT_TIMEOUT",
    ),
    PROBE_FAILED: (
        "the probe failed: {detail}",
        "run `{python} -c 'import onnxruntime'` in the app dir and fix the error it shows",
    ),
    PROVIDER_NOT_USED: (
        "the probe did not run on {required}: {detail}",
        "read ONNX Runtime's messages below; `heygem-launch --check-only` shows the library table",
    ),
}

ALL = tuple(_TEMPLATES)


def describe(cause_id: str, **details: object) -> Cause:
    message, fix = _TEMPLATES[cause_id]
    return Cause(cause_id, message.format(**details), fix.format(**details))
