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


def _chain_reason(folder: str) -> str | None:
    """Why another user could change what `folder` holds, looking at it and every folder above it."""
    real = os.path.realpath(folder)
    try:
        st = os.stat(real)
    except OSError:
        return None  # missing: dropped elsewhere
    if st.st_mode & stat.S_IWOTH:
        return f"{real} is world-writable"
    below_sticky = False
    for parent in Path(real).parents:
        try:
            pst = os.stat(parent)
        except OSError:
            continue
        if pst.st_mode & stat.S_IWOTH:
            if not pst.st_mode & stat.S_ISVTX:
                return f"{parent} above it is world-writable"
            below_sticky = True
    # Under a sticky world-writable folder (/tmp) anyone may have created it: it must be ours or root's.
    if below_sticky and st.st_uid not in (0, os.geteuid()):
        return f"{real} lies in a world-writable folder and belongs to uid {st.st_uid}"
    return None


def unsafe_folder(folder: str) -> str | None:
    """Why a library folder is unsafe, or None: another user could plant a library there, through the
    folder, a folder above it, or a library symlink in it pointing into a folder they can write (or a
    library file anyone can write)."""
    reason = _chain_reason(folder)
    if reason:
        return reason
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return None
    for entry in entries:
        if ".so" not in entry.name:
            continue
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.stat(target).st_mode & stat.S_IWOTH:
                    return f"library {entry.path} points to world-writable {target}"
                reason = _chain_reason(os.path.dirname(target))
                if reason:
                    return f"library {entry.path} points to {target}: {reason}"
            elif entry.stat(follow_symlinks=False).st_mode & stat.S_IWOTH:
                return f"library {entry.path} is world-writable"
        except OSError:
            continue  # a dangling link loads nothing
    return None


def build_library_path(
    prefix: Path,
    extra: Iterable[str],
    inherited: str,
    *,
    is_dir: Callable[[str], bool] = os.path.isdir,
    unsafe: Callable[[str], str | None] = unsafe_folder,
) -> LibraryPath:
    """The app's LD_LIBRARY_PATH; refuses a folder another user could plant a library in (a libcuda, a libc)."""
    entries, dropped = merge_entries([[str(prefix / "lib")], nvidia_wheel_dirs(prefix), extra, inherited.split(":")])
    warnings = [f"library path: dropped relative entry {entry!r}" for entry in dropped]
    kept: list[str] = []
    for entry in entries:
        if not is_dir(entry):
            warnings.append(f"library path: dropped {entry}: no such folder")
            continue
        reason = unsafe(entry)
        if reason:
            raise ConfigError(
                f"library path: {entry} is unsafe: {reason}; anyone could plant a library there "
                f"(chmod o-w it or remove it from HEYGEM_EXTRA_LIBRARY_PATH / LD_LIBRARY_PATH)"
            )
        kept.append(entry)
    return LibraryPath(tuple(kept), tuple(warnings))
