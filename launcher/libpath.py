"""The app's LD_LIBRARY_PATH: the env's lib, NVIDIA's CUDA wheels, extra folders, then the inherited value.

`merge_entries` is pure and holds the rules that matter for safety: an empty entry makes the loader
search the current directory, and a relative one depends on it, so neither ever reaches the app.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ConfigError


@dataclass(frozen=True)
class LibraryPath:
    entries: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def value(self) -> str:
        return ":".join(self.entries)


def merge_entries(groups: Iterable[Iterable[str]]) -> tuple[list[str], list[str]]:
    """Pure: concatenate in order, keep the first of duplicates, drop empty and relative entries.

    Returns (entries, dropped) where dropped lists the non-empty relative entries, to warn about.
    """
    entries: list[str] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for group in groups:
        for raw in group:
            if not raw:
                continue
            if not raw.startswith("/"):
                dropped.append(raw)
                continue
            normal = os.path.normpath(raw)
            if normal.startswith("//"):  # POSIX keeps a leading '//'; it names the same folder as '/'
                normal = "/" + normal.lstrip("/")
            if normal not in seen:
                seen.add(normal)
                entries.append(normal)
    return entries, dropped


def site_packages(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.glob("lib/python3*/site-packages") if p.is_dir())


def nvidia_wheel_dirs(prefix: Path) -> list[str]:
    """Lib folders of NVIDIA's pip wheels: CUDA 12 `nvidia/<lib>/lib` and CUDA 13 `nvidia/cu13/lib`.

    Both layouts are one level under `nvidia/`, so one pattern finds them; cuDNN keeps `nvidia/cudnn/lib`.
    """
    found: list[str] = []
    for site in site_packages(prefix):
        found += [str(p) for p in sorted(site.glob("nvidia/*/lib")) if p.is_dir()]
    return found


def _world_writable(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IWOTH)


def build_library_path(
    prefix: Path,
    extra: Iterable[str],
    inherited: str,
    *,
    is_dir: Callable[[str], bool] = os.path.isdir,
    world_writable: Callable[[str], bool] = _world_writable,
) -> LibraryPath:
    """The app's LD_LIBRARY_PATH; refuses a world-writable folder (anyone could plant a libcuda there)."""
    entries, dropped = merge_entries([[str(prefix / "lib")], nvidia_wheel_dirs(prefix), extra, inherited.split(":")])
    warnings = [f"library path: dropped relative entry {entry!r}" for entry in dropped]
    kept: list[str] = []
    for entry in entries:
        if not is_dir(entry):
            warnings.append(f"library path: dropped {entry}: no such folder")
            continue
        if world_writable(entry):
            raise ConfigError(
                f"library path: {entry} is world-writable; anyone could plant a library there "
                f"(chmod o-w it or remove it from HEYGEM_EXTRA_LIBRARY_PATH / LD_LIBRARY_PATH)"
            )
        kept.append(entry)
    return LibraryPath(tuple(kept), tuple(warnings))
