"""Real Python environments for the tests to point HEYGEM_CONDA_ENV at.

Each is a real venv (made with this interpreter), optionally turned into a conda env (conda-meta/,
a `state` file, an activate.d script), with real packages: onnxruntime-gpu linked in from the test
venv, the CPU `onnxruntime` or NVIDIA's CUDA wheels installed by pip. Envs that need downloads are
cached under .cache/test-envs, keyed by what they hold, so a second run is fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HEYGEM_TEST_CACHE", REPO / ".cache" / "test-envs"))
TEST_SITE = Path(sysconfig.get_paths()["purelib"])  # the test venv's site-packages (holds onnxruntime-gpu)
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"

# NVIDIA's CUDA 13 runtime wheels: what onnxruntime-gpu 1.31 needs, minus the driver (FIELD.md section 3).
CUDA13_WHEELS = ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13")


def site_of(prefix: Path) -> Path:
    return prefix / "lib" / PYVER / "site-packages"


def make_venv(prefix: Path) -> Path:
    # The base interpreter, not this venv's python, so the new env sees nothing of the test venv.
    base = Path(sys._base_executable)  # type: ignore[attr-defined]
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(prefix)], check=True)
    return prefix


def link_ort(prefix: Path) -> None:
    """onnxruntime-gpu from the test venv: its package and dist-info linked in, the rest via a .pth."""
    site = site_of(prefix)
    for item in TEST_SITE.iterdir():
        if item.name == "onnxruntime" or item.name.startswith("onnxruntime_gpu-"):
            (site / item.name).symlink_to(item)
    # numpy and ORT's other imports, after the env's own entries.
    (site / "zz_test_venv.pth").write_text(f"{TEST_SITE}\n")


def make_conda(prefix: Path, env_vars: dict[str, str], activate_sh: str | None) -> None:
    meta = prefix / "conda-meta"
    meta.mkdir(exist_ok=True)
    (meta / "history").write_text("")
    (meta / "state").write_text(json.dumps({"env_vars": env_vars}))
    if activate_sh is not None:
        folder = prefix / "etc" / "conda" / "activate.d"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "10-test.sh").write_text(activate_sh)


def pip_target(prefix: Path, *packages: str, upgrade: bool = False) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--disable-pip-version-check",
        "--target",
        str(site_of(prefix)),
    ]
    subprocess.run([*cmd, *(["--upgrade"] if upgrade else []), *packages], check=True)


def cached_env(name: str, recipe: list[str], build) -> Path:  # type: ignore[no-untyped-def]
    """An env under CACHE built once per recipe; a half-built one (no stamp) is rebuilt."""
    key = hashlib.sha256(json.dumps([recipe, str(TEST_SITE), sys.version]).encode()).hexdigest()[:12]
    prefix = CACHE / f"{name}-{key}"
    stamp = prefix / ".heygem-test-env"
    if not stamp.exists():
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        make_venv(prefix)
        build(prefix)
        stamp.write_text(json.dumps(recipe))
    return prefix
