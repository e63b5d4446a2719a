"""NVIDIA's CUDA 13 wheels installed by pip: the launcher finds their folders by itself, the table resolves
them, and what is left missing is the driver (this machine has none)."""

from __future__ import annotations

from pathlib import Path

from launcher.preflight import causes
from tests import envs


def test_wheel_folders_found_and_verdict_is_driver_missing(launch, cuda13_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(cuda13_env))
    assert run.returncode == 69, run.stdout
    doc = run.json
    site = envs.site_of(cuda13_env)
    # Both layouts are searched; the CUDA 13 wheels use nvidia/cu13/lib, cuDNN nvidia/cudnn/lib.
    assert str(site / "nvidia" / "cu13" / "lib") in doc["library_path"]
    assert str(site / "nvidia" / "cudnn" / "lib") in doc["library_path"]
    libraries = {row["name"]: row["path"] for row in doc["libraries"]}
    for soname in ("libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13"):
        assert libraries[soname] == str(site / "nvidia" / "cu13" / "lib" / soname)
    assert libraries["libcudnn.so.9"] == str(site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9")
    assert libraries["libcuda.so.1"] is None
    assert doc["cause"] == causes.DRIVER_MISSING
    # ORT agrees: with the wheels on the path its loader error moved on to the driver.
    assert any("libcuda.so.1" in line for line in doc["probe"]["ort_messages"])
    assert doc["environment"]["LD_LIBRARY_PATH"].split(":")[0] == str(cuda13_env / "lib")


def test_report_for_people_shows_the_resolved_files(launch, cuda13_env: Path) -> None:
    run = launch("--check-only", "--conda-env", str(cuda13_env))
    assert run.returncode == 69
    assert f"REFUSED [{causes.DRIVER_MISSING}]" in run.stdout
    assert "--gpus all" in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.strip().startswith("libcublasLt.so.13"))
    assert "nvidia/cu13/lib/libcublasLt.so.13" in row
