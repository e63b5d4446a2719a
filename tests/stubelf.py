"""A shared library whose NEEDED entries are given: stands in for onnxruntime-gpu's 284 MB provider library
where it cannot travel (the GPU machine takes 64 MiB of files). Real ELF, linked by the real linker."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
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


def make_stub(out: Path, needed: list[str]) -> Path | None:
    """Link `out` against empty libraries named after `needed`; None when no C compiler is at hand."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "empty.c"
        src.write_text("int heygem_stub(void) { return 0; }\n")
        args = []
        for soname in needed:
            subprocess.run(
                [cc, "-shared", "-fPIC", "-o", f"{tmp}/{soname}", f"-Wl,-soname,{soname}", str(src)], check=True
            )
            args.append(f"-l:{soname}")
        subprocess.run(
            [cc, "-shared", "-fPIC", "-o", str(out), str(src), f"-L{tmp}", "-Wl,--no-as-needed", *args], check=True
        )
    return out
