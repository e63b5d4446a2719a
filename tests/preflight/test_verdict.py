"""One cause per refusal.

The GPU-side states (a GPU that is hidden, a driver too old, a GPU that computes wrong numbers) cannot be
produced on a machine without a GPU, so these tests feed `decide` the facts such a machine would report:
a fake stands in for the GPU here and only here. Every state this machine can produce for real is tested
for real in test_check_refusals.py and test_cuda_wheels.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.preflight import causes
from launcher.preflight.cudapkgs import install_commands
from launcher.preflight.ortbuild import OrtBuild
from launcher.preflight.probe import EXCERPT_CHARS, ProbeResult, excerpt
from launcher.preflight.verdict import LibraryRow, decide
from launcher.system.gpu import Gpu, Inventory, visibility
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


BUILD_116 = OrtBuild(
    Path("/env/site/onnxruntime"),
    "1.16.3",
    "onnxruntime-gpu",
    "11",
    Path("/env/site/onnxruntime/capi/libonnxruntime_providers_cuda.so"),
    ("onnxruntime_gpu",),
    ("libcublasLt.so.11", "libcublas.so.11", "libcudnn.so.8", "libcurand.so.10", "libcufft.so.10", "libcudart.so.11.0"),
)
NO_DRIVER = Inventory(False, "no NVIDIA driver: libnvidia-ml.so.1 not found")
# ORT 1.16's text for a missing driver (seen: stand-in CUDA libraries, real libcudart, no driver).
INSUFFICIENT = (
    "EP Error /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 " + "x" * 600 + " CUDA failure 35: "
    "CUDA driver version is insufficient for CUDA runtime version ; GPU=0 ; hostname=h ; expr=cudaSetDevice(0);"
)
TWO = Inventory(
    True,
    "",
    "580.95.05",
    "13.0",
    (
        Gpu(0, "NVIDIA H200", "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", 143771, 0, 0, 0),
        Gpu(1, "NVIDIA H200", "GPU-1b3c9a0e-0000-4a4a-9c9c-000000000001", 143771, 0, 0, 0),
    ),
)


def test_passing_probe_is_ok_whatever_else() -> None:
    ok = probe("done", 0, ok=True, max_error=1e-6, node_providers={"Conv": CUDA, "MatMul": CUDA})
    assert decide_with(probe=ok).ok


@pytest.mark.parametrize("visible", ["", "-1", " ", "none", "NoDevFiles", "2", "GPU-ffff", "MIG-GPU-ffff/1/0"])
def test_cuda_visible_devices_hiding_every_gpu_names_what_was_asked_and_what_exists(visible: str) -> None:
    v = decide_with(env={"CUDA_VISIBLE_DEVICES": visible}, gpus=TWO)
    assert v.cause == causes.NO_GPU_VISIBLE
    assert f"CUDA_VISIBLE_DEVICES={visible!r}" in v.message
    assert "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6 (NVIDIA H200)" in v.message  # what exists
    assert "nvidia-smi -L" in v.fix


@pytest.mark.parametrize(
    "visible",
    ["0", "1", "1,0", "GPU-8932f937", "GPU-1b3c9a0e-0000-4a4a-9c9c-000000000001", "MIG-GPU-8932f937/1/0", "MIG-4f1a"],
)
def test_cuda_visible_devices_selecting_a_gpu_is_no_cause(visible: str) -> None:
    assert decide_with(env={"CUDA_VISIBLE_DEVICES": visible}, gpus=TWO).cause != causes.NO_GPU_VISIBLE


@pytest.mark.parametrize(
    ("value", "indices", "unmatched"),
    [
        (None, [0, 1], None),
        ("", [], ""),
        ("-1", [], "-1"),
        ("none", [], "none"),
        ("0,5,1", [0], "5"),  # CUDA stops at the first entry that matches nothing
        ("1,-1,0", [1], "-1"),
        ("GPU-1b3c", [1], None),
        ("0,0", [0], "0"),
        ("MIG-GPU-1b3c/2/0", [1], None),
        ("MIG-GPU-ffff/2/0", [], "MIG-GPU-ffff/2/0"),
    ],
)
def test_visibility_reads_cuda_visible_devices_as_cuda_does(value, indices, unmatched) -> None:  # type: ignore[no-untyped-def]
    seen = visibility(value, TWO)
    assert [g.index for g in seen.devices or ()] == indices
    assert seen.unmatched == unmatched


def test_a_partly_wrong_cuda_visible_devices_is_a_note() -> None:
    v = decide_with(env={"CUDA_VISIBLE_DEVICES": "0,7"}, gpus=TWO)
    assert v.cause != causes.NO_GPU_VISIBLE
    assert any("ignores '7'" in note for note in v.notes)


def test_no_gpu_visible_never_claims_an_absent_driver() -> None:
    """Without libcuda.so.1 and NVML, CUDA_VISIBLE_DEVICES=-1 is not the cause: the driver is."""
    rows = (*ALL_FOUND[:1], LibraryRow("libcuda.so.1", "driver", "NEEDED"), ALL_FOUND[2])
    v = decide_with(env={"CUDA_VISIBLE_DEVICES": "-1"}, gpus=NO_DRIVER, libraries=rows)
    assert v.cause == causes.DRIVER_MISSING


def test_driver_without_devices() -> None:
    v = decide_with(gpus=Inventory(True, "", "580.95.05", "13.0", ()))
    assert v.cause == causes.NO_GPU_VISIBLE and "0 devices" in v.message


def test_driver_too_old_for_the_build_from_nvml_figures() -> None:
    v = decide_with(gpus=Inventory(True, "", "550.54.15", "12.4", H200.gpus))
    assert v.cause == causes.DRIVER_TOO_OLD
    assert "550.54.15" in v.message and "CUDA 12.4" in v.message and "CUDA 13" in v.message
    assert "580.65.06" in v.fix and "CUDA 12" in v.fix


def test_116_insufficient_driver_text_without_a_driver_is_driver_missing() -> None:
    """1.16 reaches the driver through libcudart: no driver reads "driver version is insufficient"."""
    rows = (
        LibraryRow("libcublas.so.11", "toolkit", "NEEDED", path="/l/libcublas.so.11"),
        LibraryRow("libcudnn.so.8", "cudnn", "NEEDED", path="/l/libcudnn.so.8"),
        LibraryRow("libcuda.so.1", "driver", "run time"),
    )
    v = decide_with(build=BUILD_116, libraries=rows, gpus=NO_DRIVER, probe=probe(output=INSUFFICIENT))
    assert v.cause == causes.DRIVER_MISSING
    assert "onnxruntime-gpu 1.16.3 (CUDA 11, cuDNN 8)" in v.message and "--gpus" in v.fix


def test_116_insufficient_driver_text_with_an_old_driver_is_driver_too_old() -> None:
    rows = (
        LibraryRow("libcublas.so.11", "toolkit", "NEEDED", path="/l/libcublas.so.11"),
        LibraryRow("libcuda.so.1", "driver", "run time", path="/usr/lib/libcuda.so.1"),
    )
    old = Inventory(True, "", "418.226.00", "10.1", H200.gpus)
    v = decide_with(build=BUILD_116, libraries=rows, gpus=old, probe=probe(output=INSUFFICIENT))
    assert v.cause == causes.DRIVER_TOO_OLD
    assert "418.226.00" in v.message and "CUDA 11" in v.message and "450.80.02" in v.fix


def test_cpu_only_comes_from_the_probes_own_onnxruntime() -> None:
    both = OrtBuild(
        BUILD.package_dir,
        "1.31.1",
        "onnxruntime",
        "",
        BUILD.provider_lib,
        ("onnxruntime", "onnxruntime_gpu"),
        gpu_dist_version="1.31.1",
    )
    cpu = probe(available_providers=["AzureExecutionProvider", "CPUExecutionProvider"], ort_version="1.31.1")
    v = decide_with(build=both, probe=cpu)
    assert v.cause == causes.ONNXRUNTIME_CPU_ONLY
    assert "installed over `onnxruntime-gpu`" in v.message and "onnxruntime-gpu==1.31.1" in v.fix
    # The same two packages, but the probe's onnxruntime has CUDA: the libraries decide, and a note says so.
    rows = (LibraryRow("libcublas.so.13", "toolkit", "NEEDED"), *ALL_FOUND[1:])
    v = decide_with(build=both, libraries=rows)
    assert v.cause == causes.CUDA_LIBRARIES_MISSING
    assert any("CUDAExecutionProvider" in note for note in v.notes)


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


def test_orts_no_fallback_refusal_is_said_to_be_the_probes_own_rule() -> None:
    """The provider loaded but ORT left a node on the CPU; it calls the probe's session option the user's."""
    said = "fallback to CPU EP has been explicitly disabled by the user."
    out = f"E: This session contains graph nodes that are assigned to the default CPU EP, but {said}"
    v = decide_with(probe=probe(output=out, error=f"[ONNXRuntimeError] : 1 : FAIL : ... but {said}"))
    assert v.cause == causes.PROVIDER_NOT_USED
    assert "which the probe forbids on purpose" in v.message and said in v.message  # ORT's own words kept


def test_loader_error_names_a_library_the_table_thought_present() -> None:
    out = "E: Failed to load library x.so with error: libcublasLt.so.13: cannot open shared object file"
    v = decide_with(probe=probe(output=out))
    assert v.cause == causes.CUDA_LIBRARIES_MISSING and "libcublasLt.so.13" in v.message
    assert "'nvidia-cublas==13.*'" in v.fix


def test_toolkit_missing_without_a_driver_names_the_driver_step_too() -> None:
    rows = (LibraryRow("libcublas.so.13", "toolkit", "NEEDED"), LibraryRow("libcuda.so.1", "driver", "NEEDED"))
    v = decide_with(libraries=rows, gpus=NO_DRIVER)
    assert v.cause == causes.CUDA_LIBRARIES_MISSING
    assert "libcuda.so.1" in v.message and "--gpus all" in v.fix


def test_only_cudnn_missing_at_run_time() -> None:
    rows = (*ALL_FOUND[:2], LibraryRow("libcudnn.so.9", "cudnn", "run time"))
    v = decide_with(libraries=rows)
    assert v.cause == causes.CUDNN_MISSING and "'nvidia-cudnn-cu13==9.*'" in v.fix
    assert "when a Conv first runs" in v.message


def test_cudnn_needed_at_load_time_by_116() -> None:
    rows = (
        LibraryRow("libcublas.so.11", "toolkit", "NEEDED", path="/l"),
        LibraryRow("libcudnn.so.8", "cudnn", "NEEDED"),
    )
    v = decide_with(build=BUILD_116, libraries=rows)
    assert v.cause == causes.CUDNN_MISSING
    assert "NEEDs libcudnn.so.8, so the provider does not load at all" in v.message and "cuDNN 8" in v.message
    assert "'nvidia-cudnn-cu11==8.*'" in v.fix and "cudnn=8" in v.fix


@pytest.mark.parametrize(
    ("said", "name"),
    [
        (
            "Could not load library libcudnn_cnn_infer.so.8. Error: libcudnn_cnn_infer.so.8: cannot open shared "
            "object file: No such file or directory",
            "libcudnn_cnn_infer.so.8",
        ),
        ("Unable to load libcudnn_ops.so.9", "libcudnn_ops.so.9"),
    ],
)
def test_cudnn_sub_library_named_by_cudnn_is_cudnn_missing(said: str, name: str) -> None:
    v = decide_with(probe=probe("run", output=said))
    assert v.cause == causes.CUDNN_MISSING and name in v.message
    assert "nvidia-cudnn" in v.fix


def test_missing_optional_cufft_refuses_nothing() -> None:
    rows = (*ALL_FOUND, LibraryRow("libcufft.so.12", "toolkit", "run time", optional=True))
    assert decide_with(libraries=rows).cause == causes.PROBE_FAILED


def test_every_cause_has_a_message_and_a_fix() -> None:
    for cause_id in causes.ALL:
        described = causes.describe(cause_id, **{k: "x" for k in causes.keys(cause_id)})
        assert described.message and described.fix and "\n" not in described.message + described.fix


def test_loader_error_is_cut_around_its_cause_never_before_it() -> None:
    cut = excerpt(INSUFFICIENT)
    assert "CUDA failure 35: CUDA driver version is insufficient" in cut
    assert len(cut) <= EXCERPT_CHARS + 6
    assert excerpt("short error") == "short error"


@pytest.mark.parametrize(
    ("sonames", "cuda", "cudnn", "pip", "conda"),
    [
        (
            ["libcublasLt.so.11", "libcublas.so.11", "libcurand.so.10"],
            11,
            8,
            "nvidia-cublas-cu11 nvidia-curand-cu11",
            "cudatoolkit=11",
        ),
        (["libcudnn.so.8"], 11, 8, "'nvidia-cudnn-cu11==8.*'", "cudnn=8"),
        (
            ["libcublas.so.12", "libcufft.so.11", "libnvrtc.so.12"],
            12,
            9,
            "nvidia-cublas-cu12 nvidia-cufft-cu12 nvidia-cuda-nvrtc-cu12",
            "cuda-version=12 libcublas libcufft cuda-nvrtc",
        ),
        (["libcudnn_ops.so.9"], 12, 9, "'nvidia-cudnn-cu12==9.*'", "cuda-version=12 cudnn=9"),
        (
            ["libcublasLt.so.13", "libcudart.so.13"],
            13,
            9,
            "'nvidia-cublas==13.*' 'nvidia-cuda-runtime==13.*'",
            "cuda-version=13 libcublas cuda-cudart",
        ),
    ],
)
def test_fix_packages_come_from_one_table(sonames, cuda, cudnn, pip, conda) -> None:  # type: ignore[no-untyped-def]
    line = install_commands(sonames, cuda, cudnn, "/env/bin/python")
    assert f"`/env/bin/python -m pip install {pip}`" in line
    assert f"`conda install -c conda-forge {conda}`" in line


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


def test_probe_failed_past_the_import_never_says_to_import_onnxruntime() -> None:
    """Bug (mistralai/mistral-inference#144 and others): a CUDA error in create_session was told to
    `python -c 'import onnxruntime'`, which works."""
    report = {"stage": "create_session", "error": "CUDA failure 3: initialization error", "ort_version": "1.16.3"}
    probe = ProbeResult(3, False, report, "CUDA failure 3: initialization error", 1.0)
    v = decide_with(libraries=ALL_FOUND, probe=probe)
    assert v.cause == causes.PROBE_FAILED and "import onnxruntime" not in v.fix
    early = ProbeResult(3, False, {"stage": "import_onnxruntime", "error": "boom"}, "boom", 1.0)
    assert "import onnxruntime" in decide_with(libraries=ALL_FOUND, probe=early).fix


def test_gpu_health_table_is_pure_and_orders_refusals_first() -> None:
    from launcher.preflight.gpuhealth import assess
    from launcher.system.gpu import Gpu

    g = Gpu(0, "GPU", "GPU-1", 24564, 24000, 0, 1, 564, (77,), 2, clocks_event_reasons=0x40)
    found = assess(g)
    assert [f.condition for f in found] == [
        "compute_mode_prohibited",
        "memory_low",
        "thermal_slowdown",
        "other_processes",
    ]
    assert [f.refuse for f in found] == [True, False, False, False]
    assert assess(g, memory_min_mib=1024)[1].refuse  # HEYGEM_GPU_MEMORY_MIN set: a refusal
