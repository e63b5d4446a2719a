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
# Not the provider: it passed, but the app cannot start as configured (`--check-only` only; exit 78).
CONFIG_ERROR = "config_error"


@dataclass(frozen=True)
class Cause:
    id: str
    message: str
    fix: str


# Templates are filled with str.format(**details); every key they use is always supplied by the verdict.
# The builds' identity ("onnxruntime-gpu 1.16.3 (CUDA 11, cuDNN 8)") is `{build}`; `{packages}` is the pip and
# conda command from launcher/preflight/cudapkgs.py; `{driver_step}` is "" or a sentence naming the missing driver too.
_TEMPLATES: dict[str, tuple[str, str]] = {
    ONNXRUNTIME_MISSING: (
        "onnxruntime cannot be imported by the app's python ({python})",
        "install the build the app pins into that env, e.g. `{python} -m pip install onnxruntime-gpu==<pin>`",
    ),
    ONNXRUNTIME_CPU_ONLY: (
        "the onnxruntime the app imports has no CUDA provider ({detail})",
        "`{python} -m pip uninstall -y onnxruntime onnxruntime-gpu && {python} -m pip install onnxruntime-gpu=={pin}`",
    ),
    CUDA_LIBRARIES_MISSING: (
        "CUDA libraries needed by {build} do not resolve: {missing}{driver_step}",
        "install them in the env: {packages}; or add their folder to HEYGEM_EXTRA_LIBRARY_PATH{driver_fix}",
    ),
    DRIVER_MISSING: (
        "no NVIDIA driver: libcuda.so.1 does not resolve and NVML does not load, so {build} cannot reach a GPU"
        "{ort_said}",
        "start the container with the NVIDIA runtime: `docker run --gpus all ...` or a compose GPU reservation",
    ),
    NO_GPU_VISIBLE: (
        "the NVIDIA driver is present but no GPU is visible to the app ({detail})",
        "{visible_fix} and give the container a GPU (`--gpus all`)",
    ),
    DRIVER_TOO_OLD: (
        "the driver {driver_version} supports CUDA {driver_cuda} but {build} needs CUDA {cuda_major}",
        "upgrade the host driver to >= {min_driver}, or install an onnxruntime-gpu build for CUDA {driver_major}",
    ),
    CUDNN_MISSING: (
        "cuDNN {cudnn_major} for {build} does not resolve: {missing}; {when}{driver_step}",
        "install it in the env: {packages}; or add its folder to HEYGEM_EXTRA_LIBRARY_PATH{driver_fix}",
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


def keys(cause_id: str) -> set[str]:
    """The details a cause's message and fix use."""
    import string

    return {name for text in _TEMPLATES[cause_id] for _, name, _, _ in string.Formatter().parse(text) if name}


def describe(cause_id: str, **details: object) -> Cause:
    message, fix = _TEMPLATES[cause_id]
    return Cause(cause_id, message.format(**details), fix.format(**details))
