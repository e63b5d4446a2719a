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


def candidates(soname: str, library_path: Iterable[str], machine: str | None) -> list[str]:
    """Every file the loader would consider for `soname`, in its order (the first is the one it takes), without
    repeats of one file; files of another architecture left out, as the loader skips them."""
    found: list[str] = []
    seen: set[str] = set()
    every = [os.path.join(folder, soname) for folder in library_path] + list(ld_cache().get(soname, ()))
    for candidate in every + [os.path.join(folder, soname) for folder in DEFAULT_DIRS]:
        real = os.path.realpath(candidate)
        if real in seen or not os.path.exists(candidate):
            continue
        seen.add(real)
        if machine is None or elf_machine(Path(candidate)) == machine:
            found.append(candidate)
    return found


def dangling(soname: str, library_path: Iterable[str]) -> str | None:
    """`PATH -> TARGET` for the first link named `soname` on the path whose target does not exist (the loader
    passes it by as if it were not there); None when there is none."""
    for folder in library_path:
        candidate = os.path.join(folder, soname)
        if os.path.islink(candidate) and not os.path.exists(candidate):
            try:
                return f"{candidate} -> {os.readlink(candidate)}"
            except OSError:
                return f"{candidate} -> ?"
    return None


def defines(path: str, symbol: str, version: str | None) -> bool | None:
    """Whether the ELF file at `path` defines `symbol` (in the version node `version`, when given) in its dynamic
    symbol table, or with `symbol` empty whether it has the version node; None when it cannot be read."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection

    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            names: dict[int, str] = {}
            versym = None
            for section in elf.iter_sections():
                if isinstance(section, GNUVerDefSection):
                    names = {vd.entry.vd_ndx: next(aux).name for vd, aux in section.iter_versions()}
                elif isinstance(section, GNUVerSymSection):
                    versym = section
            if not symbol:  # only the version node was missing
                return version in names.values()
            dynsym = elf.get_section_by_name(".dynsym")
            for index, sym in enumerate(dynsym.iter_symbols() if dynsym is not None else ()):
                if sym.name != symbol or sym.entry.st_shndx == "SHN_UNDEF":
                    continue
                if version is None or versym is None:
                    return True
                ndx = versym.get_symbol(index).entry.ndx
                if isinstance(ndx, int) and names.get(ndx & 0x7FFF) == version:
                    return True
            return False
    except (OSError, ELFError, StopIteration):
        return None
