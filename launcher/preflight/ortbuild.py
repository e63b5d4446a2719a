"""What the installed ONNX Runtime build needs, read from its files without importing it.

The launcher never imports onnxruntime (only the probe child does), so the build is found in the
env's site-packages, its CUDA version read from `capi/build_and_package_info.py` as data, and its
libraries from the ELF NEEDED entries of `libonnxruntime_providers_cuda.so`.
"""

from __future__ import annotations

import ast
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from launcher.preflight.libpath import site_packages

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms beside the probe
if TYPE_CHECKING:
    from typing import BinaryIO

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
    machine: int | None = None  # the provider library's e_machine, for skipping foreign files
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


class ELFError(Exception):
    """Not an ELF file, or one cut short."""


# (header: e_machine, e_shoff, e_shentsize, e_shnum), (section header: sh_type, sh_offset, sh_size, sh_link,
# sh_entsize), dynamic entry (d_tag, d_val): struct layouts by ELF class (1: 32-bit, 2: 64-bit), from elf(5).
_LAYOUTS = {
    1: ("18xH12xI10xHH", "4xI8xIII8xI", "iI"),
    2: ("18xH20xQ10xHH", "4xI16xQQI12xQ", "qQ"),
}
_SHT_DYNAMIC, _DT_NULL, _DT_NEEDED = 6, 0, 1


def _read(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) < size:
        raise ELFError(f"cut short: {size} bytes at offset {offset}")
    return data


def _elf_layout(handle: BinaryIO) -> tuple[str, int, tuple[str, str, str], tuple[int, int, int, int]]:
    """(byte order, e_machine, struct layouts, (e_machine, e_shoff, e_shentsize, e_shnum))."""
    ident = _read(handle, 0, 16)
    if ident[:4] != b"\x7fELF" or ident[4] not in _LAYOUTS or ident[5] not in (1, 2):
        raise ELFError("not an ELF file")
    order = "<" if ident[5] == 1 else ">"
    layouts = _LAYOUTS[ident[4]]
    fields = struct.unpack(order + layouts[0], _read(handle, 0, struct.calcsize(order + layouts[0])))
    return order, fields[0], layouts, fields


def elf_needed(path: Path) -> tuple[list[str], int | None]:
    """The NEEDED sonames of an ELF file (each SHT_DYNAMIC section's DT_NEEDED entries, named in the string
    table it links to, as `readelf -d` shows them) and its machine (e_machine). ELFError when it is no ELF.
    Read with `struct`: a parser library would cost the preflight tens of milliseconds and megabytes."""
    with path.open("rb") as handle:
        order, machine, (_header, section, dyn), (_m, shoff, shentsize, shnum) = _elf_layout(handle)
        section_size = struct.calcsize(order + section)
        if shoff and shnum == 0:  # more sections than e_shnum holds: the count is section 0's sh_size
            shnum = struct.unpack(order + section, _read(handle, shoff, section_size))[2]
        sections = [
            struct.unpack(order + section, _read(handle, shoff + i * shentsize, section_size))
            for i in range(shnum if shoff else 0)
        ]
        needed: list[str] = []
        dyn_size = struct.calcsize(order + dyn)
        for sh_type, offset, size, link, _entsize in sections:
            if sh_type != _SHT_DYNAMIC or link >= len(sections):
                continue
            strtab = sections[link][1]
            for at in range(offset, offset + size - dyn_size + 1, dyn_size):
                tag, value = struct.unpack(order + dyn, _read(handle, at, dyn_size))
                if tag == _DT_NULL:
                    break
                if tag == _DT_NEEDED:
                    needed.append(_string(handle, strtab + value))
        return needed, machine


def _string(handle: BinaryIO, offset: int) -> str:
    handle.seek(offset)
    data = b""
    while b"\0" not in data:
        chunk = handle.read(256)
        if not chunk:
            raise ELFError(f"string at offset {offset} cut short")
        data += chunk
    return data[: data.index(b"\0")].decode("utf-8", "replace")


def elf_machine(path: Path) -> int | None:
    """An ELF file's e_machine; None for a file that cannot be read or is no ELF."""
    try:
        with path.open("rb") as handle:
            return _elf_layout(handle)[1]
    except (OSError, ELFError, struct.error):
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
