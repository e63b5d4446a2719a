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
CUDA_LIBRARY_CONFLICT = "cuda_library_conflict"
CUDA_FORWARD_COMPAT = "cuda_forward_compat"
GPU_SYSTEM_NOT_READY = "gpu_system_not_ready"
GPU_UNAVAILABLE = "gpu_unavailable"
GPU_UNHEALTHY = "gpu_unhealthy"
GPU_MEMORY_LOW = "gpu_memory_low"
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
        "{probe_fix}",
    ),
    CUDA_LIBRARY_CONFLICT: (
        "{soname} resolves to {path}, which lacks {what} that {build} needs: that copy is another release"
        "{copies}{driver_step}",
        "{conflict_fix}{driver_fix}",
    ),
    CUDA_FORWARD_COMPAT: (
        "CUDA error 804 ({cuda_text}): libcuda.so.1 resolves to {libcuda}, a forward-compatibility driver (NVIDIA's "
        "CUDA compat package), which only data-centre GPUs support{gpus}",
        "take {folder} off the library path ({where}) so that the host's own libcuda.so.1, which the NVIDIA runtime "
        "mounts, is used; forward compatibility is for data-centre GPUs only",
    ),
    GPU_SYSTEM_NOT_READY: (
        "CUDA error 802 ({cuda_text}): the system is not ready for CUDA work; on NVSwitch systems (HGX, DGX) the "
        "NVIDIA Fabric Manager is not running{gpus}",
        "on the host start the Fabric Manager of the driver's version ({driver_version}): "
        "`systemctl enable --now nvidia-fabricmanager`, then check `nvidia-smi -q | grep -A2 Fabric`",
    ),
    GPU_UNAVAILABLE: (
        "CUDA error {code} ({cuda_text}): {why}",
        "{unavailable_fix}",
    ),
    GPU_UNHEALTHY: (
        "GPU {gpu}: {finding}",
        "{finding_fix}",
    ),
    GPU_MEMORY_LOW: (
        "GPU {gpu}: {finding}",
        "{finding_fix}",
    ),
    PROVIDER_NOT_USED: (
        "the probe did not run on {required}: {detail}",
        "read ONNX Runtime's messages below; `heygem-launch --check-only` shows the library table",
    ),
}

ALL = tuple(_TEMPLATES)

# CUDA's own error codes at start, as ORT prints them ("CUDA failure 804: ..."), and the cause each is: the runtime's
# cudaError_t values (CUDA Runtime API reference, "Data types used by CUDA Runtime", cudaError); the driver's
# CUresult has the same numbers for these. 35 (no driver, or too old) and 100 (no device) have causes of their own.
CUDA_ERRORS: dict[int, tuple[str, str]] = {
    46: ("cudaErrorDevicesUnavailable", GPU_UNAVAILABLE),
    802: ("cudaErrorSystemNotReady", GPU_SYSTEM_NOT_READY),
    804: ("cudaErrorCompatNotSupportedOnDevice", CUDA_FORWARD_COMPAT),
    999: ("cudaErrorUnknown", GPU_UNAVAILABLE),
}


def keys(cause_id: str) -> set[str]:
    """The details a cause's message and fix use."""
    import string

    return {name for text in _TEMPLATES[cause_id] for _, name, _, _ in string.Formatter().parse(text) if name}


def describe(cause_id: str, **details: object) -> Cause:
    message, fix = _TEMPLATES[cause_id]
    return Cause(cause_id, message.format(**details), fix.format(**details))
