"""Which package provides a CUDA library, per CUDA (or cuDNN) major: the one table every fix line uses.

pip names are NVIDIA's wheels on PyPI: `-cu11`/`-cu12` suffixes for CUDA 11 and 12; for CUDA 13 NVIDIA
dropped the suffix (`nvidia-cublas` 13.x, files under `nvidia/cu13/lib`, FIELD.md section 3) and pins go
by the library's own major (`nvidia-curand==10.*`), except cuDNN, which is suffixed by the CUDA major it
is built for (`nvidia-cudnn-cu13`). cuDNN's own major is a
version pin (`nvidia-cudnn-cu11==8.*` is cuDNN 8 for CUDA 11). conda names are conda-forge's: CUDA 11
ships as one `cudatoolkit`, CUDA 12 and later as one package per library, held to the major by
`cuda-version`. A slow test (tests/test_cuda_packages.py) checks every pip name against the index.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

# soname stem -> pip stem; the soname's own major is not the CUDA major (libcurand.so.10 is CUDA 11-13).
_PIP_STEM = {
    "cublas": "cublas",
    "cublasLt": "cublas",
    "cudart": "cuda-runtime",
    "curand": "curand",
    "cufft": "cufft",
    "nvrtc": "cuda-nvrtc",
    "cudnn": "cudnn",
}
# Unsuffixed wheels (CUDA 13) are versioned by the library, not by CUDA: nvidia-curand 10.4 and
# nvidia-cufft 12.x are CUDA 13's (seen on PyPI). The pin is the soname's major, or this where no soname.
_LIBRARY_MAJOR_CUDA13 = {"cublas": 13, "cuda-runtime": 13, "curand": 10, "cufft": 12, "cuda-nvrtc": 13}
# soname stem -> conda-forge package for CUDA >= 12 (CUDA 11: `cudatoolkit` holds them all but cuDNN).
_CONDA = {
    "cublas": "libcublas",
    "cublasLt": "libcublas",
    "cudart": "cuda-cudart",
    "curand": "libcurand",
    "cufft": "libcufft",
    "nvrtc": "cuda-nvrtc",
}


def stem(soname: str) -> str:
    """'libcudnn_cnn_infer.so.8' -> 'cudnn'; 'libcublasLt.so.12' -> 'cublasLt'."""
    base = re.sub(r"^lib|\.so.*$", "", soname)
    return "cudnn" if base.startswith("cudnn") else base


def pip_package(soname: str, cuda_major: int, cudnn_major: int | None = None) -> str | None:
    """NVIDIA's pip wheel, with a version pin where the name alone does not fix the major; None if unknown."""
    pip = _PIP_STEM.get(stem(soname))
    if pip is None:
        return None
    if pip == "cudnn":
        name = f"nvidia-cudnn-cu{cuda_major}"
        return f"{name}=={cudnn_major}.*" if cudnn_major else name
    if cuda_major >= 13:
        match = re.search(r"\.so\.(\d+)", soname)
        major = int(match.group(1)) if match else _LIBRARY_MAJOR_CUDA13.get(pip, cuda_major)
        return f"nvidia-{pip}=={major}.*"
    return f"nvidia-{pip}-cu{cuda_major}"


def conda_package(soname: str, cuda_major: int, cudnn_major: int | None = None) -> str | None:
    name = stem(soname)
    if name == "cudnn":
        return f"cudnn={cudnn_major}" if cudnn_major else "cudnn"
    if name not in _CONDA:
        return None
    return f"cudatoolkit={cuda_major}" if cuda_major <= 11 else _CONDA[name]


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def install_commands(
    sonames: Sequence[str], cuda_major: int | None, cudnn_major: int | None, python: str
) -> str | None:
    """The pip and conda command lines that provide exactly `sonames`; None when the CUDA major is unknown."""
    if cuda_major is None:
        return None
    pips = _unique(pip_package(s, cuda_major, cudnn_major) for s in sonames)
    condas = _unique(conda_package(s, cuda_major, cudnn_major) for s in sonames)
    parts = []
    if pips:
        parts.append(f"`{shlex.quote(python)} -m pip install {' '.join(shlex.quote(p) for p in pips)}`")
    if condas:
        pin = [] if cuda_major <= 11 else [f"cuda-version={cuda_major}"]
        parts.append(f"`conda install -c conda-forge {' '.join(shlex.quote(c) for c in [*pin, *condas])}`")
    return " or ".join(parts) or None


def all_pip_packages() -> list[str]:
    """Every pip name the table can produce, for the index check."""
    names = []
    for soname in ("libcublas.so", "libcudart.so", "libcurand.so", "libcufft.so", "libnvrtc.so"):  # no major
        names += [pip_package(soname, major) for major in (11, 12, 13)]
    names += [pip_package("libcudnn.so", 11, 8), pip_package("libcudnn.so", 12, 9), pip_package("libcudnn.so", 13, 9)]
    return _unique(names)
