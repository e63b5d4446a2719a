"""The app's LD_LIBRARY_PATH: the env's lib, NVIDIA's CUDA wheels, extra folders, then the inherited value.

The rules that matter for safety (`merge_entries`: no empty or relative entry; `unsafe_folder`: no folder
another user could plant a library in) live in `envrules`, which the early probe shares.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ConfigError
from launcher.preflight import envrules
from launcher.preflight.envrules import merge_entries, unsafe_folder


@dataclass(frozen=True)
class LibraryPath:
    entries: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def value(self) -> str:
        return ":".join(self.entries)


def site_packages(prefix: Path) -> list[Path]:
    return [Path(site) for site in envrules.site_packages(str(prefix))]


def build_library_path(
    prefix: Path,
    extra: Iterable[str],
    inherited: str,
    *,
    is_dir: Callable[[str], bool] = os.path.isdir,
    unsafe: Callable[[str], str | None] = unsafe_folder,
) -> LibraryPath:
    """The app's LD_LIBRARY_PATH; refuses a folder another user could plant a library in (a libcuda, a libc)."""
    wheels = envrules.nvidia_wheel_dirs(str(prefix))
    entries, dropped = merge_entries([[str(prefix / "lib")], wheels, extra, inherited.split(":")])
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
