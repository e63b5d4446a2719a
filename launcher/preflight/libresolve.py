"""Which file a soname resolves to in the app's environment, in the dynamic loader's order.

The provider library has no RUNPATH, so the loader looks in LD_LIBRARY_PATH, then the ld.so cache,
then the default folders. A file of the wrong architecture is skipped, as the loader skips it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from launcher.preflight.ortbuild import elf_machine

DEFAULT_DIRS = (
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
)

_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$")


@functools.cache
def ld_cache() -> dict[str, tuple[str, ...]]:
    """soname -> paths from `ldconfig -p` (the ld.so cache), first match first."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if ldconfig is None:
        return {}
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    cache: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = _CACHE_LINE.match(line)
        if match:
            cache.setdefault(match.group(1), []).append(match.group(3))
    return {name: tuple(paths) for name, paths in cache.items()}


def resolve(soname: str, library_path: Iterable[str], machine: int | None) -> str | None:
    candidates = [os.path.join(folder, soname) for folder in library_path]
    candidates += ld_cache().get(soname, ())
    candidates += [os.path.join(folder, soname) for folder in DEFAULT_DIRS]
    for candidate in candidates:
        if os.path.exists(candidate) and (machine is None or elf_machine(Path(candidate)) == machine):
            return candidate
    return None
