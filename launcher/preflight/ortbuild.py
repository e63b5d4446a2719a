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

from launcher.preflight.libpath import site_packages

PROVIDER_LIB = "libonnxruntime_providers_cuda.so"

# The C and C++ runtimes every process has; not CUDA, not worth a row in the table.
_SYSTEM = re.compile(r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so")

# Minimum Linux driver for each CUDA major (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
DRIVER_LIB = "libcuda.so.1"


@dataclass(frozen=True)
class RequiredLibrary:
    name: str  # soname
    kind: str  # "toolkit", "cudnn", "driver"
    how: str  # "NEEDED" (loaded with the provider) or "run time" (opened when an op needs it)
    optional: bool = False  # cuFFT: only FFT ops open it; cuDNN's sub-libraries: libcudnn opens them


@dataclass(frozen=True)
class OrtBuild:
    package_dir: Path
    version: str
    package_name: str  # "onnxruntime-gpu", or "onnxruntime" for the CPU build
    cuda_version: str  # "13.0" from the build info, "11" from libcudart.so.11.0; "" when the build has no CUDA
    provider_lib: Path | None
    distributions: tuple[str, ...]  # dist-info names found, e.g. ("onnxruntime", "onnxruntime_gpu")
    needed: tuple[str, ...] = ()  # the provider library's NEEDED sonames
    machine: str | None = None  # the provider library's e_machine, for skipping foreign files
    gpu_dist_version: str = ""  # onnxruntime-gpu's version from its dist metadata, whatever files won

    @property
    def cuda_major(self) -> int | None:
        match = re.match(r"(\d+)", self.cuda_version)
        return int(match.group(1)) if match else None

    @property
    def cudnn_major(self) -> int | None:
        """From the libcudnn.so.N the provider NEEDs, else from ORT's published pairing for its CUDA major."""
        for name in self.needed:
            match = re.match(r"libcudnn\.so\.(\d+)", name)
            if match:
                return int(match.group(1))
        if self.cuda_major is None:
            return None
        return _runtime_cudnn(self.cuda_major, self.version)

    @property
    def identity(self) -> str:
        """'onnxruntime-gpu 1.16.3 (CUDA 11, cuDNN 8)': what every message and fix names."""
        if not self.cuda_version:
            return f"{self.package_name} {self.version} (no CUDA)"
        cudnn = f", cuDNN {self.cudnn_major}" if self.cudnn_major else ""
        return f"{self.package_name} {self.version} (CUDA {self.cuda_version}{cudnn})"

    @property
    def cpu_package_installed(self) -> bool:
        """The CPU `onnxruntime` distribution is installed, alone or over onnxruntime-gpu's files."""
        return "onnxruntime" in self.distributions


def _build_info(package_dir: Path) -> dict[str, str]:
    """Assignments of string constants in build_and_package_info.py, read as data, not executed.

    Builds before ~1.17 (1.16.3 included) ship no such file: the caller falls back to the dist metadata.
    """
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


def _distributions(site: Path) -> dict[str, str]:
    """dist name -> version, e.g. {"onnxruntime_gpu": "1.16.3"}, from the dist-info metadata (PEP 566)."""
    found: dict[str, str] = {}
    for dist in sorted(site.glob("onnxruntime*.dist-info")):
        name, _, dir_version = dist.name.removesuffix(".dist-info").partition("-")
        version = dir_version
        try:
            with (dist / "METADATA").open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Version:"):
                        version = line.split(":", 1)[1].strip()
                        break
                    if not line.strip():
                        break
        except OSError:
            pass
        found[name.lower()] = version
    return found


def _cuda_from_needed(needed: list[str]) -> str:
    """'11' from 'libcudart.so.11.0': the CUDA major the provider was linked against."""
    for name in needed:
        match = re.match(r"libcudart\.so\.(\d+)", name)
        if match:
            return match.group(1)
    return ""


def find_build(prefix: Path) -> OrtBuild | None:
    for site in site_packages(prefix):
        package_dir = site / "onnxruntime"
        if not (package_dir / "__init__.py").is_file():
            continue
        info = _build_info(package_dir)
        provider = package_dir / "capi" / PROVIDER_LIB
        has_provider = provider.exists()
        dists = _distributions(site)
        needed: list[str] = []
        machine = None
        if has_provider:
            needed, machine = elf_needed(provider)
        default_name = "onnxruntime-gpu" if has_provider else "onnxruntime"
        package_name = info.get("package_name", default_name)
        dist_key = "onnxruntime_gpu" if package_name == "onnxruntime-gpu" else "onnxruntime"
        version = info.get("__version__") or dists.get(dist_key) or next(iter(dists.values()), "unknown")
        return OrtBuild(
            package_dir,
            version,
            package_name,
            info.get("cuda_version") or (_cuda_from_needed(needed) if has_provider else ""),
            provider if has_provider else None,
            tuple(sorted(dists)),
            tuple(needed),
            machine,
            dists.get("onnxruntime_gpu", ""),
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


def _runtime_cudnn(cuda_major: int, ort_version: str) -> int:
    # ORT's CUDA 11 builds use cuDNN 8; its CUDA 12 builds moved from cuDNN 8 to 9 in 1.19 (ORT's CUDA
    # provider requirements page); CUDA 13 builds use cuDNN 9.
    if cuda_major <= 11:
        return 8
    if cuda_major == 12 and _version_tuple(ort_version) < (1, 19):
        return 8
    return 9


# What libcudnn.so.N opens itself when a Conv first runs (cuDNN's own loader): missing, they fail only then.
CUDNN_SUBLIBRARIES = {
    8: ("libcudnn_ops_infer.so.8", "libcudnn_cnn_infer.so.8"),
    9: ("libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_engines_precompiled.so.9"),
}


def runtime_libraries(cuda_major: int, ort_version: str) -> list[RequiredLibrary]:
    """Libraries opened with dlopen when something first needs them, so NEEDED may not list them."""
    cudnn_major = _runtime_cudnn(cuda_major, ort_version)
    cufft = "libcufft.so.10" if cuda_major <= 11 else f"libcufft.so.{cuda_major - 1}"
    rows = [RequiredLibrary(f"libcudnn.so.{cudnn_major}", "cudnn", "run time")]
    # Shown, not refused on their own: only a Conv proves them (the probe runs one), and cuDNN names the
    # one it misses in its error, which the verdict reads.
    rows += [RequiredLibrary(name, "cudnn", "run time", True) for name in CUDNN_SUBLIBRARIES[cudnn_major]]
    # The driver: NEEDED by CUDA 13 builds; builds that reach it through libcudart (1.16, 1.20) open it later.
    rows += [RequiredLibrary(DRIVER_LIB, "driver", "run time"), RequiredLibrary(cufft, "toolkit", "run time", True)]
    return rows


def _kind(soname: str) -> str:
    if soname.startswith("libcuda.so"):
        return "driver"
    return "cudnn" if soname.startswith("libcudnn") else "toolkit"


def required_libraries(build: OrtBuild) -> list[RequiredLibrary]:
    """Every library the build's CUDA provider needs: its NEEDED entries plus cuDNN, the driver and cuFFT."""
    if build.provider_lib is None:
        return []
    required = [RequiredLibrary(name, _kind(name), "NEEDED") for name in build.needed if not _SYSTEM.match(name)]
    if build.cuda_major is not None:
        names = {lib.name for lib in required}
        required += [lib for lib in runtime_libraries(build.cuda_major, build.version) if lib.name not in names]
    return required
