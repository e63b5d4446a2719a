"""What only a machine with an NVIDIA GPU and driver can show. Skipped cleanly elsewhere.

Run on a GPU machine with scripts/gpu-check.sh.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from launcher.preflight import causes
from launcher.preflight.check import library_table
from launcher.preflight.libpath import build_library_path
from launcher.preflight.ortbuild import elf_needed, find_build
from launcher.system import gpu
from tests.stubelf import NEEDED_1_31, make_stub

INVENTORY = gpu.inventory()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not INVENTORY.gpus, reason=f"no GPU: {INVENTORY.reason or 'NVML lists none'}"),
]


def test_nvml_inventory() -> None:
    assert INVENTORY.available and INVENTORY.driver_version
    assert INVENTORY.cuda_driver_major and INVENTORY.cuda_driver_major >= 11
    assert all(g.memory_total_mib > 0 and g.name for g in INVENTORY.gpus)


def test_nvml_health_of_the_real_gpu() -> None:
    """The health fields every NVIDIA GPU answers (compute mode, free memory, clock-event reasons) are read; the
    others may be None (not supported: ECC on a GeForce, row remapping before Ampere), and the table assesses them."""
    from launcher.preflight.gpuhealth import assess

    for g in INVENTORY.gpus:
        assert g.compute_mode in (0, 1, 2, 3) and g.memory_free_mib is not None and g.clocks_event_reasons is not None
        print(f"[{g.index}] {g.name}: {[f.line() for f in assess(g)] or 'healthy'}")


def test_library_table_resolves_the_real_driver(tmp_path: Path) -> None:
    """A build layout with a stand-in provider library (real ELF, the 1.31 NEEDED entries); the driver's
    libcuda.so.1 and this interpreter's NVIDIA wheels are real."""
    capi = tmp_path / "env" / "lib" / "python3.8" / "site-packages" / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (capi.parent / "__init__.py").write_text("")
    (capi / "build_and_package_info.py").write_text(
        "package_name = 'onnxruntime-gpu'\n__version__ = '1.31.1'\ncuda_version = '13.0'\n"
    )
    stub = os.environ.get("HEYGEM_TEST_PROVIDER_STUB")
    provider = capi / "libonnxruntime_providers_cuda.so"
    if stub:
        provider.write_bytes(Path(stub).read_bytes())
    elif make_stub(provider, NEEDED_1_31) is None:
        pytest.skip("no C compiler to build the stand-in provider library")
    assert elf_needed(provider)[0][:5] == NEEDED_1_31[:5]
    build = find_build(tmp_path / "env")
    assert build is not None and build.cuda_major == 13
    path = build_library_path(Path(sys.prefix), [], os.environ.get("LD_LIBRARY_PATH", ""))
    rows = {row.name: row.path for row in library_table(build, path.entries)}
    print("library table:", rows)
    assert rows["libcuda.so.1"] is not None


def test_check_only_on_a_gpu_machine(launch) -> None:
    """With onnxruntime-gpu present this must pass; with the CPU package, refuse as onnxruntime_cpu_only."""
    run = launch("--check-only", "--json", "--conda-env", "", env={"HEYGEM_CONDA_ENV": ""})
    print(run.stdout[-4000:])
    doc = run.json
    assert doc["gpus"]["gpus"], "the report must carry the NVML inventory"
    if (
        doc["onnxruntime"]
        and doc["onnxruntime"]["package"] == "onnxruntime-gpu"
        and not doc["onnxruntime"]["distributions"].count("onnxruntime")
    ):
        assert run.returncode == 0, doc["message"]
        assert set(doc["probe"]["report"]["node_providers"].values()) == {"CUDAExecutionProvider"}
    else:
        assert run.returncode == 69
        assert doc["cause"] in (causes.ONNXRUNTIME_CPU_ONLY, causes.ONNXRUNTIME_MISSING)


def test_a_real_cuda_context_is_seen_from_proc() -> None:
    """What the runtime fallback guard relies on: libcuda.so mapped and /dev/nvidia* open, read from /proc."""
    import subprocess

    from launcher.system.procs import gpu_use

    pytest.importorskip("torch")
    code = "import sys, torch; torch.zeros(1, device='cuda'); print('up', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        use = gpu_use(proc.pid)
        print("gpu use:", use)
        assert use is not None and use.cuda_context
        assert any(lib.startswith("libcuda.so") for lib in use.libraries)
        assert any(dev.startswith("/dev/nvidia") for dev in use.devices)
    finally:
        proc.kill()
        proc.wait()


def test_doctor_reports_the_gpu_table(launch) -> None:
    run = launch("doctor", "--json", env={"HEYGEM_CONDA_ENV": ""})
    doc = run.json
    print(run.stdout[-3000:])
    assert doc["gpus"]["available"] and doc["gpus"]["gpus"][0]["memory_total_mib"] > 0


def test_one_app_per_gpu_names_each_real_gpu(launch) -> None:
    """HEYGEM_GPUS=all on the real driver: one planned app and one probe per GPU NVML lists, each pinned to
    its GPU (the probe reports the CUDA_VISIBLE_DEVICES it ran with) and named with its real UUID."""
    run = launch("--check-only", "--json", "--conda-env", "", env={"HEYGEM_CONDA_ENV": "", "HEYGEM_GPUS": "all"})
    doc = run.json
    print(json_lines := [(i["program"], i["gpu"], i["ok"], i["cause"]) for i in doc["instances"]], flush=True)
    assert len(json_lines) == len(INVENTORY.gpus)
    for instance, device in zip(doc["instances"], INVENTORY.gpus, strict=True):
        assert instance["gpu_uuid"] == device.uuid and instance["cuda_visible_devices"] == str(device.index)
        assert instance["probe_cuda_visible_devices"] == str(device.index)
    assert run.returncode == (0 if doc["ok"] else 69)
