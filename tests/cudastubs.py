"""Stand-in CUDA libraries for a real ONNX Runtime CUDA provider library, made from the provider's own imports.

No CPU machine has CUDA: these empty functions, with the sonames and symbol versions the provider imports,
let the real `libonnxruntime_providers_cuda.so` load (its BIND_NOW needs every symbol), so that a process
really maps it, as a process of a working GPU install does. Nothing ever calls them. (FIELD.md section 3.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

_CUDA_SONAME = re.compile(r"^lib(cuda|cudart|cublas|cublasLt|curand|cufft|cudnn\w*|nvrtc)\.so[\d.]*$")


def needed(library: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", "-W", str(library)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def imports(library: Path) -> dict[str, set[str]]:
    """Symbol names the library imports, by the soname their version names (unversioned CUDA driver calls,
    `cu*`, go to libcuda.so.1)."""
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(library)], capture_output=True, text=True, check=True)
    found: dict[str, set[str]] = defaultdict(set)
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[6] != "UND":
            continue
        name, _, version = fields[7].partition("@")
        version = version.split(" ")[0]
        if version:
            found[version].add(name)
        elif name.startswith("cu"):
            found["libcuda.so.1"].add(name)
    return found


def make_stand_ins(provider: Path, out: Path) -> Path | None:
    """Stand-ins for every CUDA library `provider` needs, in `out`; None without a C compiler or readelf."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("readelf") is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    symbols = imports(provider)
    for soname in needed(provider):
        if not _CUDA_SONAME.match(soname):
            continue
        names = sorted(symbols.get(soname, set()))
        source = out / f"{soname}.c"
        source.write_text("void heygem_stand_in(void){}\n" + "".join(f"void {n}(void){{}}\n" for n in names))
        args = [cc, "-shared", "-fPIC", "-o", str(out / soname), f"-Wl,-soname,{soname}", str(source)]
        if soname != "libcuda.so.1":  # the driver's symbols are unversioned; the toolkit's carry the soname
            script = out / f"{soname}.map"
            script.write_text(f"{soname} {{ global: *; }};\n")
            args.append(f"-Wl,--version-script={script}")
        subprocess.run(args, check=True)
    return out
