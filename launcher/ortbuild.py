"""What the installed ONNX Runtime build needs, read from its files without importing it.

The launcher never imports onnxruntime (only the probe child does), so the build is found in the
env's site-packages, its CUDA version read from `capi/build_and_package_info.py` as data, and its
libraries from the ELF NEEDED entries of `libonnxruntime_providers_cuda.so`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from launcher.libpath import site_packages

PROVIDER_LIB = "libonnxruntime_providers_cuda.so"

# The C and C++ runtimes every process has; not CUDA, not worth a row in the table.
_SYSTEM = re.compile(r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so")

# Minimum Linux driver for each CUDA major (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


@dataclass(frozen=True)
class RequiredLibrary:
    name: str  # soname
    kind: str  # "toolkit", "cudnn", "driver"
    how: str  # "NEEDED" (loaded with the provider) or "run time" (opened when an op needs it)
    optional: bool = False  # cuFFT: only FFT ops open it


@dataclass(frozen=True)
class OrtBuild:
    package_dir: Path
    version: str
    package_name: str  # "onnxruntime-gpu", or "onnxruntime" for the CPU build
    cuda_version: str  # "13.0"; "" when the build has no CUDA
    provider_lib: Path | None
    distributions: tuple[str, ...]  # dist-info names found, e.g. ("onnxruntime", "onnxruntime_gpu")

    @property
    def cuda_major(self) -> int | None:
        match = re.match(r"(\d+)", self.cuda_version)
        return int(match.group(1)) if match else None

    @property
    def cpu_package_installed(self) -> bool:
        """The CPU `onnxruntime` distribution is installed, alone or over onnxruntime-gpu's files."""
        return "onnxruntime" in self.distributions


def _build_info(package_dir: Path) -> dict[str, str]:
    """Assignments of string constants in build_and_package_info.py, read as data, not executed."""
    path = package_dir / "capi" / "build_and_package_info.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    info: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            info[node.targets[0].id] = node.value.value
    return info


def _distributions(site: Path) -> tuple[str, ...]:
    names = set()
    for dist in site.glob("onnxruntime*.dist-info"):
        name = dist.name.split("-")[0].lower()  # "onnxruntime_gpu-1.31.1.dist-info" -> "onnxruntime_gpu"
        names.add(name)
    return tuple(sorted(names))


def find_build(prefix: Path) -> OrtBuild | None:
    for site in site_packages(prefix):
        package_dir = site / "onnxruntime"
        if not (package_dir / "__init__.py").is_file():
            continue
        info = _build_info(package_dir)
        provider = package_dir / "capi" / PROVIDER_LIB
        dists = _distributions(site)
        package_name = info.get("package_name", "onnxruntime-gpu" if provider.exists() else "onnxruntime")
        return OrtBuild(
            package_dir,
            info.get("__version__", "unknown"),
            package_name,
            info.get("cuda_version", ""),
            provider if provider.exists() else None,
            dists,
        )
    return None


def elf_needed(path: Path) -> tuple[list[str], int | None]:
    """The NEEDED sonames of an ELF file and its machine (e_machine), via pyelftools."""
    # Imported here, not at the top: the preflight reads ELF files while the probe child starts up.
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as handle:
        elf = ELFFile(handle)
        needed: list[str] = []
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                needed += [tag.needed for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
        return needed, elf.header.e_machine


def elf_machine(path: Path) -> str | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as handle:
            return ELFFile(handle).header.e_machine
    except (OSError, ELFError):
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def runtime_libraries(cuda_major: int, ort_version: str) -> list[RequiredLibrary]:
    """Libraries ORT opens with dlopen when an op first needs them, so NEEDED does not list them."""
    if cuda_major <= 11:
        cudnn, cufft = "libcudnn.so.8", "libcufft.so.10"
    elif cuda_major == 12:
        # ORT moved its CUDA 12 builds from cuDNN 8 to 9 in 1.19.
        cudnn = "libcudnn.so.9" if _version_tuple(ort_version) >= (1, 19) else "libcudnn.so.8"
        cufft = "libcufft.so.11"
    else:
        cudnn, cufft = "libcudnn.so.9", f"libcufft.so.{cuda_major - 1}"
    return [RequiredLibrary(cudnn, "cudnn", "run time"), RequiredLibrary(cufft, "toolkit", "run time", True)]


def _kind(soname: str) -> str:
    if soname.startswith("libcuda.so"):
        return "driver"
    return "cudnn" if soname.startswith("libcudnn") else "toolkit"


def required_libraries(build: OrtBuild) -> list[RequiredLibrary]:
    """Every library the build's CUDA provider needs: its NEEDED entries plus cuDNN and cuFFT."""
    if build.provider_lib is None:
        return []
    needed, _machine = elf_needed(build.provider_lib)
    required = [RequiredLibrary(name, _kind(name), "NEEDED") for name in needed if not _SYSTEM.match(name)]
    if build.cuda_major is not None:
        names = {lib.name for lib in required}
        required += [lib for lib in runtime_libraries(build.cuda_major, build.version) if lib.name not in names]
    return required


_WHEELS = {
    "cublas": "cublas",
    "cublasLt": "cublas",
    "cudart": "cuda-runtime",
    "curand": "curand",
    "cufft": "cufft",
    "cudnn": "cudnn",
    "nvrtc": "cuda-nvrtc",
}


def wheel_for(soname: str, cuda_major: int | None) -> str | None:
    """NVIDIA's pip wheel that ships a soname, for the fix line."""
    stem = re.sub(r"^lib|\.so.*$", "", soname)
    wheel = _WHEELS.get(stem)
    if wheel is None or cuda_major is None:
        return None
    if cuda_major >= 13:
        return f"nvidia-{wheel}-cu{cuda_major}" if wheel == "cudnn" else f"nvidia-{wheel}"
    return f"nvidia-{wheel}-cu{cuda_major}"
