"""Real Python environments for the tests to point HEYGEM_CONDA_ENV at.

Each is a real venv (made with this interpreter), optionally turned into a conda env (conda-meta/,
a `state` file, an activate.d script), with real packages: onnxruntime-gpu linked in from the test
venv, the CPU `onnxruntime` or NVIDIA's CUDA wheels installed by pip. Envs that need downloads are
cached under ~/.cache/heygem-launch-tests (HEYGEM_TEST_CACHE), keyed by what they hold, so a second run is
fast; a cold cache builds them (pip's own cache keeps the wheels).

The build matrix (`BUILDS`): real onnxruntime-gpu builds HeyGem meets, each in a venv of a Python it
supports, with NVIDIA's real libcudart wheel for its CUDA major and stand-ins for the rest of CUDA made
from the provider library's own imports (tests/stubelf.py): the real provider then loads with no GPU.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HEYGEM_TEST_CACHE", Path.home() / ".cache" / "heygem-launch-tests"))
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

    def make(prefix: Path) -> None:
        make_venv(prefix)
        build(prefix)

    return _cached(name, [recipe, str(TEST_SITE), sys.version], make)


def pyenv_python(version: str) -> str | None:
    """An interpreter from pyenv (these machines have 3.8 there), or from PATH."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python"))
    return found[-1] if found else shutil.which(f"python{version}")


def base_python() -> str | None:
    return str(Path(sys._base_executable))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Build:
    """One real onnxruntime-gpu build of the matrix."""

    name: str  # test id
    version: str  # onnxruntime-gpu on PyPI
    python: Callable[[], str | None]  # the interpreter its env is made with
    cudart: str  # NVIDIA's libcudart wheel for its CUDA major
    cuda_major: int
    cudnn_major: int
    extra: tuple[str, ...] = ()
    cpu_version: str = ""  # the CPU `onnxruntime` of the same release, where the patch levels differ

    def interpreter(self) -> str | None:
        return self.python()


BUILDS = (
    # What HeyGem pins (requirements_0.txt: 1.16.0, CUDA 11.8, cuDNN 8) on its Python 3.8.
    Build(
        "1.16-py3.8", "1.16.3", lambda: pyenv_python("3.8"), "nvidia-cuda-runtime-cu11==11.8.89", 11, 8, ("numpy<2",)
    ),
    # A CUDA 12 build (cuDNN 9; NEEDs cuDNN's sub-libraries and nvrtc).
    Build("1.20-cuda12", "1.20.2", base_python, "nvidia-cuda-runtime-cu12", 12, 9, ("numpy<2",), "1.20.1"),
    # Today's (CUDA 13; NEEDs libcuda.so.1 itself, opens cuDNN at run time).
    Build("1.31-cuda13", "1.31.1", base_python, "nvidia-cuda-runtime==13.*", 13, 9, ("numpy",)),
)


def pip_env(python: str, prefix: Path, *installs: list[str]) -> None:
    """A venv of `python` with each list of requirements installed in turn by its own pip (later over earlier)."""
    subprocess.run([python, "-m", "venv", str(prefix)], check=True)
    for packages in installs:
        subprocess.run(
            [str(prefix / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            check=True,
        )


def _cached(name: str, recipe: list, make: Callable[[Path], None]) -> Path:  # type: ignore[type-arg]
    """A folder under CACHE made once per recipe; a half-made one (no stamp) is made again."""
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}"
    stamp = path / ".heygem-test-env"
    if not stamp.exists():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        stamp.write_text(json.dumps(recipe))
        _prune(name, path)
    stamp.touch()  # its last use, for _prune
    return path


STALE_DAYS = 3


def _prune(name: str, kept: Path) -> None:
    """Other recipes of `name` unused for STALE_DAYS: an env keyed by a clone's test venv (each clone has its own)
    is never used again once that clone is gone, and each holds up to 1.6 GB."""
    for other in CACHE.glob(f"{name}-*"):
        stamp = other / ".heygem-test-env"
        # (one without a stamp may be in the making by another run: left alone)
        unused = stamp.exists() and time.time() - stamp.stat().st_mtime > STALE_DAYS * 86400
        if other != kept and other.name[len(name) + 1 :].isalnum() and unused:
            shutil.rmtree(other, ignore_errors=True)


def build_env(build: Build, variant: str = "gpu") -> Path:
    """The build's env. variant: "gpu" (onnxruntime-gpu and libcudart), "cpu-over-gpu" (then the CPU
    package installed over it), "gpu-over-cpu" (the CPU package first, then onnxruntime-gpu)."""
    python = build.interpreter()
    if python is None:
        raise FileNotFoundError(f"no interpreter for {build.name}")
    gpu = [f"onnxruntime-gpu=={build.version}", *build.extra, build.cudart]
    cpu = [f"onnxruntime=={build.cpu_version or build.version}", *build.extra]
    installs = {"gpu": [gpu], "cpu-over-gpu": [gpu, cpu], "gpu-over-cpu": [cpu, gpu]}[variant]
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    return _cached(
        f"{build.name}-{variant}", [*map(" ".join, installs), version], lambda p: pip_env(python, p, *installs)
    )


def provider_of(prefix: Path) -> Path:
    found = sorted(prefix.glob("lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so"))
    return found[0]


def stand_ins(build: Build, prefix: Path, variant: str) -> Path:
    """Stand-in CUDA libraries for the build's provider: "full" (all but the driver) or "no-cudnn"."""
    from launcher.preflight.ortbuild import CUDNN_SUBLIBRARIES
    from tests.stubelf import make_stand_ins

    provider = provider_of(prefix)
    without = ("libcudnn",) if variant == "no-cudnn" else ()
    also = (f"libcudnn.so.{build.cudnn_major}", *CUDNN_SUBLIBRARIES[build.cudnn_major])
    recipe = [str(provider), str(provider.stat().st_size), variant, (Path(__file__).parent / "stubelf.py").read_text()]
    return _cached(
        f"stand-ins-{build.name}-{variant}", recipe, lambda out: make_stand_ins(provider, out, without, also)
    )
