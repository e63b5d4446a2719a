"""Every GPU-side cause for real: real onnxruntime-gpu 1.16.3 on Python 3.8 (HeyGem's), NVIDIA's real libcudart, and
a STAND-IN NVIDIA DRIVER (tests/standin_driver.py: a libnvidia-ml.so.1 and a libcuda.so.1 built with cc, because no
CPU machine has a driver). With it ORT prints CUDA's own texts (100, 802, 804, 999, 46), and the launcher reads the
GPU's health from NVML through nvidia-ml-py, as on a GPU machine. The CUDA libraries other than libcudart are
tests/stubelf.py's stand-ins; the library table is the launcher's own, never the stand-in's.

The failure reports reproduced: microsoft/onnxruntime#8594 (another release's libcublasLt first on the path),
mistralai/mistral-inference#144 (804 from an image's compat/ libcuda.so.1 on a GeForce), memoavatar/memo#13 (a NEEDED
cuDNN sub-library missing: 1.20's provider, since 1.16.3's NEEDs no sub-library), a dangling libcuda link.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from launcher.preflight import causes
from tests import envs, standin_driver, stubelf
from tests.conftest import assert_no_traceback
from tests.standin_driver import StandInDriver, StandInGpu

pytestmark = pytest.mark.slow

BUILD_116, BUILD_120 = envs.BUILDS[0], envs.BUILDS[1]
IMPORT_FIX = "import onnxruntime"


@pytest.fixture(scope="module")
def env116() -> Path:
    if BUILD_116.interpreter() is None:
        pytest.skip("no Python 3.8 (pyenv has it on the project's machines)")
    if stubelf.cc() is None:
        pytest.skip("no C compiler to build the stand-in CUDA libraries and driver")
    return envs.build_env(BUILD_116, "gpu")


@pytest.fixture(scope="module")
def full116(env116: Path) -> Path:
    return envs.stand_ins(BUILD_116, env116, "full")


def check(launch, prefix: Path, extra: list[Path], driver: list[Path], *args: str, **env: str):  # type: ignore[no-untyped-def]
    """--check-only --json of `prefix`, the CUDA stand-ins in HEYGEM_EXTRA_LIBRARY_PATH, the stand-in driver's
    folders on the launcher's LD_LIBRARY_PATH (pynvml's dlopen; the probe inherits it)."""
    env = {"HEYGEM_EXTRA_LIBRARY_PATH": ":".join(map(str, extra)), **env}
    if driver:
        env.update(standin_driver.launcher_env(*driver))
    run = launch("--check-only", "--json", "--conda-env", str(prefix), *args, env=env)
    assert_no_traceback(run)
    return run


def driver_in(tmp_path: Path, **kw) -> Path:  # type: ignore[no-untyped-def]
    return standin_driver.install(tmp_path / "driver", StandInDriver(**kw))


# (cuInit's code, the cause, words of the message, words of the fix): CUDA's own texts, from libcudart 11.8.
CUDA_CASES = [
    (802, causes.GPU_SYSTEM_NOT_READY, "system not yet initialized", "nvidia-fabricmanager"),
    (999, causes.GPU_UNAVAILABLE, "bad state", "nvidia-smi -r -i 0"),
    (46, causes.GPU_UNAVAILABLE, "busy or unavailable", "-c DEFAULT"),
    (100, causes.NO_GPU_VISIBLE, "CUDA reports no device", "nvidia-smi -L"),
]


@pytest.mark.parametrize(("code", "cause", "said", "fixed"), CUDA_CASES, ids=[str(c[0]) for c in CUDA_CASES])
def test_cuda_errors_at_start(launch, env116, full116, tmp_path, code, cause, said, fixed) -> None:  # type: ignore[no-untyped-def]
    run = check(launch, env116, [full116], [driver_in(tmp_path, cu_init=code)])
    doc = run.json
    assert run.returncode == 69 and doc["cause"] == cause, doc["message"]
    assert said in doc["message"] and fixed in doc["fix"], doc
    assert IMPORT_FIX not in doc["fix"]  # the probe got past the import
    assert any(f"CUDA failure {code}" in m for m in doc["probe"]["ort_messages"])  # ORT's own words, for real


def test_804_from_a_compat_libcuda_on_a_geforce(launch, env116, full116, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """mistralai/mistral-inference#144: the image's forward-compatibility libcuda.so.1 first on the path."""
    compat = tmp_path / "usr" / "local" / "cuda" / "compat"
    driver = StandInDriver(cu_init=804, gpus=(StandInGpu(name="NVIDIA GeForce RTX 3090"),))
    nvml = standin_driver.install(tmp_path / "driver", driver, cuda=False)
    standin_driver.install(tmp_path / "driver", driver, nvml=False, libcuda_folder=compat)
    doc = check(launch, env116, [full116], [compat, nvml]).json
    assert doc["cause"] == causes.CUDA_FORWARD_COMPAT, doc["message"]
    assert f"{compat}/libcuda.so.1" in doc["message"] and "GeForce RTX 3090" in doc["message"]
    assert "forward compatibility was attempted on non supported HW" in doc["message"]
    assert f"take {compat} off the library path" in doc["fix"] and IMPORT_FIX not in doc["fix"]


def test_46_names_the_exclusive_holder(launch, env116, full116, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpu = StandInGpu(compute_mode=standin_driver.COMPUTEMODE_EXCLUSIVE_PROCESS, processes=((4242, 900),))
    doc = check(launch, env116, [full116], [driver_in(tmp_path, cu_init=46, gpus=(gpu,))]).json
    assert doc["cause"] == causes.GPU_UNAVAILABLE
    assert "Exclusive_Process" in doc["message"] and "4242" in doc["message"]
    assert "stop those processes" in doc["fix"] and "-c DEFAULT" in doc["fix"]


def _wrong_release(full: Path, out: Path, soname: str) -> tuple[Path, str]:
    """A copy of `soname` from another release: the stand-in without one of the symbols the provider imports."""
    provider = envs.provider_of(envs.build_env(BUILD_116, "gpu"))
    versions = stubelf.imports(provider)[soname]
    version = sorted(v for v in versions if v)[0]
    dropped = sorted(versions[version])[0][0]
    versions = {v: {s for s in syms if s[0] != dropped} for v, syms in versions.items()}
    stubelf.make_stand_in(out, soname, versions)
    return out, dropped


@pytest.mark.parametrize("with_driver", [False, True], ids=["no-driver", "stand-in-driver"])
def test_another_releases_library_first_on_the_path(launch, env116, full116, tmp_path, with_driver) -> None:  # type: ignore[no-untyped-def]
    """microsoft/onnxruntime#8594: the loader's symbol error names the file that won; the right copy is named."""
    wrong, symbol = _wrong_release(full116, tmp_path / "old-cublas", "libcublasLt.so.11")
    driver = [driver_in(tmp_path)] if with_driver else []
    doc = check(launch, env116, [wrong, full116], driver).json
    assert doc["cause"] == causes.CUDA_LIBRARY_CONFLICT, doc["message"]
    assert f"{wrong}/libcublasLt.so.11" in doc["message"] and symbol in doc["message"]
    assert f"{full116}/libcublasLt.so.11 (has it)" in doc["message"]
    assert f"so that {full116}/libcublasLt.so.11, which has it, is found first" in doc["fix"]
    # The image's problem first, the missing driver named with it.
    assert ("libcuda.so.1) is missing too" in doc["message"]) is not with_driver
    assert "read ONNX Runtime's messages" not in doc["fix"]


def test_a_dangling_link_is_named_with_its_target(launch, env116, full116, tmp_path) -> None:  # type: ignore[no-untyped-def]
    libs = tmp_path / "libs"
    shutil.copytree(full116, libs, ignore=shutil.ignore_patterns("libcublasLt.so.11", ".heygem-test-env"))
    (libs / "libcublasLt.so.11").symlink_to("/opt/gone/libcublasLt.so.11.11.3.6")
    doc = check(launch, env116, [libs], []).json
    assert doc["cause"] == causes.CUDA_LIBRARIES_MISSING
    link = f"{libs}/libcublasLt.so.11 -> /opt/gone/libcublasLt.so.11.11.3.6"
    assert f"libcublasLt.so.11 (a dangling link: {link})" in doc["message"]
    row = next(r for r in doc["libraries"] if r["name"] == "libcublasLt.so.11")
    assert row["path"] is None and row["dangling"] == link


def test_a_needed_cudnn_sub_library_missing_stops_the_provider_loading(launch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """memoavatar/memo#13 with 1.20 (CUDA 12), whose provider NEEDs libcudnn_adv.so.9 itself."""
    if stubelf.cc() is None:
        pytest.skip("no C compiler to build the stand-in CUDA libraries")
    prefix = envs.build_env(BUILD_120, "gpu")
    libs = tmp_path / "libs"
    ignored = shutil.ignore_patterns("libcudnn_adv.so.9", ".heygem-test-env")
    shutil.copytree(envs.stand_ins(BUILD_120, prefix, "full"), libs, ignore=ignored)
    doc = check(launch, prefix, [libs], []).json
    assert doc["cause"] == causes.CUDNN_MISSING, doc["message"]
    assert "NEEDs libcudnn_adv.so.9, so the provider does not load at all" in doc["message"]
    assert "when a Conv first runs" not in doc["message"]


# Health conditions that refuse: (the GPU's settings, the condition named).
REFUSALS = [
    ({"retired_pages_pending": 1}, "retired_pages_pending"),
    ({"remapped_rows_pending": 1}, "row_remapping_pending"),
    ({"remapped_rows_failure": 1}, "row_remapping_failed"),
    ({"ecc_volatile_uncorrected": 3}, "ecc_uncorrectable"),
    ({"recovery_action": standin_driver.RECOVERY_GPU_RESET}, "recovery_action"),
    ({"compute_mode": standin_driver.COMPUTEMODE_PROHIBITED}, "compute_mode_prohibited"),
]


@pytest.mark.parametrize(("gpu", "condition"), REFUSALS, ids=[c for _, c in REFUSALS])
def test_gpu_health_refusals(launch, env116, full116, tmp_path, gpu, condition) -> None:  # type: ignore[no-untyped-def]
    driver = driver_in(tmp_path, gpus=(StandInGpu(**gpu),))
    run = check(launch, env116, [full116], [driver])
    doc = run.json
    assert run.returncode == 69 and doc["cause"] == causes.GPU_UNHEALTHY, doc["message"]
    assert doc["message"].startswith("GPU 0 GPU-00000000-0000-0000-0000-000000000000 (NVIDIA GeForce RTX 4090): ")
    assert next(f["condition"] for f in doc["gpu_health"] if f["refuse"]) == condition
    report = launch("--check-only", "--conda-env", str(env116), env=_env([full116], [driver])).stdout
    assert f"      !! {condition}: " in report and f"REFUSED [{causes.GPU_UNHEALTHY}]" in report


def _env(extra: list[Path], driver: list[Path], **more: str) -> dict[str, str]:
    return {"HEYGEM_EXTRA_LIBRARY_PATH": ":".join(map(str, extra)), **standin_driver.launcher_env(*driver), **more}


WARNINGS = [
    ({"clocks_event_reasons": standin_driver.CLOCKS_EVENT_HW_THERMAL}, "thermal_slowdown", "HW thermal slowdown"),
    ({"clocks_event_reasons": standin_driver.CLOCKS_EVENT_SW_POWER_CAP}, "power_slowdown", "SW power cap"),
    ({"processes": ((777, 1200),)}, "other_processes", "pids 777"),
    ({"memory_used_mib": 23000}, "memory_low", "only 1564 MiB of 24564 MiB free"),
]


@pytest.mark.parametrize(("gpu", "condition", "said"), WARNINGS, ids=[c for _, c, _ in WARNINGS])
def test_gpu_health_warnings(launch, env116, full116, tmp_path, gpu, condition, said) -> None:  # type: ignore[no-untyped-def]
    """Warned, never the cause: the probe's own outcome decides (cuInit 999 here, so that it gets an answer)."""
    driver = driver_in(tmp_path, cu_init=999, gpus=(StandInGpu(**gpu),))
    doc = check(launch, env116, [full116], [driver]).json
    assert doc["cause"] == causes.GPU_UNAVAILABLE
    found = [f for f in doc["gpu_health"] if f["condition"] == condition]
    assert found and not found[0]["refuse"] and said in found[0]["message"]
    assert any(said in w for w in doc["warnings"])
    report = launch("--check-only", "--conda-env", str(env116), env=_env([full116], [driver])).stdout
    assert f"      ! {condition}: " in report


def test_memory_min_set_refuses(launch, env116, full116, tmp_path) -> None:  # type: ignore[no-untyped-def]
    driver = driver_in(tmp_path, gpus=(StandInGpu(memory_used_mib=20000),))
    doc = check(launch, env116, [full116], [driver], HEYGEM_GPU_MEMORY_MIN="6GB").json
    assert doc["cause"] == causes.GPU_MEMORY_LOW
    assert "only 4564 MiB of 24564 MiB free, below HEYGEM_GPU_MEMORY_MIN (6144 MiB)" in doc["message"]


def test_health_per_gpu_in_the_fleet_and_doctor(launch, env116, full116, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two GPUs, the second with a pending row remap: it alone is refused for it, in --json, the report and doctor."""
    gpus = (StandInGpu(), StandInGpu(name="NVIDIA A100-SXM4-80GB", remapped_rows_pending=1))
    driver = driver_in(tmp_path, cu_init=999, gpus=gpus)
    doc = check(launch, env116, [full116], [driver], HEYGEM_GPUS="2", HEYGEM_GPU_POLICY="any").json
    first, second = doc["instances"]
    assert first["cause"] == causes.GPU_UNAVAILABLE and first["gpu_health"] == []
    assert second["cause"] == causes.GPU_UNHEALTHY and "A100" in second["message"]
    assert second["gpu_health"][0]["condition"] == "row_remapping_pending"
    env = _env([full116], [driver], HEYGEM_CONDA_ENV=str(env116), HEYGEM_RUN_DIR=str(tmp_path / "run"))
    doctor = launch("doctor", "--json", env=env)
    assert doctor.returncode == 69
    health = doctor.json["gpu_health"]
    assert [(f["gpu"], f["condition"]) for f in health] == [(1, "row_remapping_pending")]
    text = launch("doctor", env=env).stdout
    assert "  [1] NVIDIA A100-SXM4-80GB" in text and "      !! row_remapping_pending: " in text
