"""Stand-in shared libraries, real ELF linked by the real linker, for what no CPU machine has.

`make_stub`: a library whose NEEDED entries are given; stands in for onnxruntime-gpu's 284 MB provider
library where it cannot travel (the GPU machine takes 64 MiB of files).

`make_stand_ins`: the CUDA libraries a real provider library imports (cuBLAS, cuDNN, cuRAND, cuFFT), each
with the soname, the symbol versions and the symbols the provider imports from it, read from the provider
itself with pyelftools (what `readelf -V --dyn-syms` shows). With NVIDIA's real libcudart beside them the
real provider loads and then fails exactly as on a host without a driver (FIELD.md section 3): ORT calls
none of them before cudaSetDevice().
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

# Recorded from onnxruntime-gpu 1.31.1's provider library (readelf -d); used only to build the stand-in.
NEEDED_1_31 = [
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcudart.so.13",
    "libcuda.so.1",
    "libstdc++.so.6",
    "libc.so.6",
]

# Never stood in for: the C/C++ runtime is real; libcudart comes from NVIDIA's wheel; libcuda is the driver.
_NOT_STOOD_IN = re.compile(
    r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w]*|libcudart|libcuda)\.so"
)
# Unversioned imports, assigned by the library's naming convention (cublasLt before cublas).
_PREFIXES = (("cublasLt", "libcublasLt"), ("cublas", "libcublas"), ("cudnn", "libcudnn"), ("curand", "libcurand"))
_PREFIXES += (("cufft", "libcufft"), ("nvrtc", "libnvrtc"), ("cu", "libcuda"))
_C_RUNTIME = re.compile(r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so")


def cc() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def make_stub(out: Path, needed: list[str]) -> Path | None:
    """Link `out` against empty libraries named after `needed`; None when no C compiler is at hand."""
    compiler = cc()
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "empty.c"
        src.write_text("int heygem_stub(void) { return 0; }\n")
        args = []
        for soname in needed:
            subprocess.run(
                [compiler, "-shared", "-fPIC", "-o", f"{tmp}/{soname}", f"-Wl,-soname,{soname}", str(src)], check=True
            )
            args.append(f"-l:{soname}")
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-o", str(out), str(src), f"-L{tmp}", "-Wl,--no-as-needed", *args],
            check=True,
        )
    return out


def imports(provider: Path, runtime: bool = False) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """soname -> version name ('' for none) -> {(symbol, 'FUNC'|'OBJECT')}: what `provider` imports;
    with `runtime`, from libcudart and libcuda too."""
    skipped = _C_RUNTIME if runtime else _NOT_STOOD_IN
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

    with provider.open("rb") as handle:
        elf = ELFFile(handle)
        needed: list[str] = []
        dynamic = elf.get_section_by_name(".dynamic")
        if dynamic is not None:
            needed = [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        version_file: dict[int, tuple[str, str]] = {}  # version index -> (file, version name)
        versym = None
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for verneed, auxes in section.iter_versions():
                    for aux in auxes:
                        version_file[aux.entry.vna_other] = (verneed.name, aux.name)
            elif isinstance(section, GNUVerSymSection):
                versym = section
        dynsym = elf.get_section_by_name(".dynsym")
        found: dict[str, dict[str, set[tuple[str, str]]]] = defaultdict(lambda: defaultdict(set))
        for soname in needed:
            if not skipped.match(soname):
                found[soname]  # a library imported for no symbol still gets its stand-in
        for index, sym in enumerate(dynsym.iter_symbols()):
            if sym.name == "" or sym.entry.st_shndx != "SHN_UNDEF":
                continue
            kind = "OBJECT" if sym.entry.st_info.type == "STT_OBJECT" else "FUNC"
            ndx = versym.get_symbol(index).entry.ndx if versym is not None else 0
            file, version = version_file.get(ndx if isinstance(ndx, int) else 0, ("", ""))
            if not file:
                stem = next((lib for prefix, lib in _PREFIXES if sym.name.startswith(prefix)), None)
                file = next((n for n in needed if stem and n.startswith(stem + ".so")), "")
            if file and not skipped.match(file):
                found[file][version].add((sym.name, kind))
        return {k: dict(v) for k, v in found.items()}


# What a real library NEEDs that matters without a driver (recorded with readelf -d from nvidia-cudnn-cu12
# 9.x): cuDNN 9's runtime-compiled engines link the driver, so a build that NEEDs them (ORT 1.20) fails to
# load with "libcuda.so.1: cannot open shared object file" on a host without one.
REAL_NEEDS = {"libcudnn_engines_runtime_compiled.so.9": ["libcuda.so.1"]}


def make_stand_in(out_dir: Path, soname: str, versions: dict[str, set[tuple[str, str]]]) -> Path:
    """One stand-in library: `soname`, the given symbol versions, every symbol returning 0."""
    compiler = cc()
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build stand-in CUDA libraries")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, script = Path(tmp) / "stub.c", Path(tmp) / "stub.map"
        lines = ["long heygem_stand_in(void) { return 0; }"]
        for symbols in versions.values():
            for name, kind in sorted(symbols):
                lines.append(f"char {name}[64];" if kind == "OBJECT" else f"long {name}(void) {{ return 0; }}")
        src.write_text("\n".join(lines) + "\n")
        named = sorted(v for v in versions if v)
        if named:
            # Each symbol in the version node the provider asks for; unversioned ones in the first node.
            nodes = {v: sorted(n for n, _ in versions[v]) for v in named}
            nodes[named[0]] += ["heygem_stand_in", *sorted(n for n, _ in versions.get("", ()))]
            script.write_text(
                "".join(
                    f"{v} {{ global: {' '.join(s + ';' for s in syms)} local: *; }};\n" for v, syms in nodes.items()
                )
            )
        else:
            script.write_text("{ global: *; };\n")
        out = out_dir / soname
        links = []
        for needed in REAL_NEEDS.get(soname, []):
            # Linked against an empty library of that name, which stays behind in the temp folder.
            empty = Path(tmp) / needed
            subprocess.run(
                [compiler, "-shared", "-o", str(empty), f"-Wl,-soname,{needed}", "-x", "c", "/dev/null"], check=True
            )
            links += [f"-L{tmp}", "-Wl,--no-as-needed", f"-l:{needed}"]
        subprocess.run(
            [
                compiler,
                "-shared",
                "-fPIC",
                "-w",
                "-o",
                str(out),
                f"-Wl,-soname,{soname}",
                f"-Wl,--version-script={script}",
                str(src),
                *links,
            ],
            check=True,
        )
    return out


def make_stand_ins(
    provider: Path, out_dir: Path, without: tuple[str, ...] = (), also: tuple[str, ...] = ()
) -> list[Path]:
    """Stand-ins for every CUDA library `provider` imports except libcudart, libcuda and those in `without`;
    `also` adds libraries the provider reaches at run time (cuDNN's sub-libraries), with no symbols."""
    wanted = imports(provider)
    for soname in also:
        wanted.setdefault(soname, {})
    return [
        make_stand_in(out_dir, soname, versions)
        for soname, versions in sorted(wanted.items())
        if not soname.startswith(without)
    ]


def make_loadable(provider: Path, out_dir: Path) -> list[Path] | None:
    """Stand-ins for every CUDA library `provider` needs, libcudart and libcuda included, so that a process
    can really load (map) it, as on a working GPU install; nothing ever calls them. None without cc."""
    if cc() is None:
        return None
    return [make_stand_in(out_dir, soname, versions) for soname, versions in sorted(imports(provider, True).items())]
