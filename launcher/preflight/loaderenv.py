"""The dynamic loader's variables, made safe for every process the launcher starts (supervisord, the app's
wrapper, the probe, activate.d shells), not only for the app: an empty or relative LD_LIBRARY_PATH entry
makes ld.so search the current directory (the app dir), and LD_PRELOAD / LD_AUDIT load any library at all.

Pure: environments in, environments out. Source for the variable list: glibc's `sysdeps/generic/unsecvars.h`
(what ld.so itself drops for setuid programs), restricted to the loader's own variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from launcher.errors import ConfigError
from launcher.preflight.envrules import OWN_PREFIX, merge_entries, unsafe_folder

# Loader variables the app never needs: each can make ld.so load code from a path of someone's choosing,
# or write files where it is told. LD_LIBRARY_PATH is kept, cleaned; LD_BIND_NOW is harmless.
LOADER_VARIABLES = frozenset(
    {
        "LD_PRELOAD",
        "LD_AUDIT",
        "LD_DEBUG",
        "LD_DEBUG_OUTPUT",
        "LD_PROFILE",
        "LD_PROFILE_OUTPUT",
        "LD_ORIGIN_PATH",
        "LD_DYNAMIC_WEAK",
        "LD_SHOW_AUXV",
        "LD_USE_LOAD_BIAS",
        "LD_HWCAP_MASK",
        "LD_ASSUME_KERNEL",
        "LD_BIND_NOT",
        "LD_TRACE_LOADED_OBJECTS",
        "GCONV_PATH",
        "MALLOC_TRACE",
    }
)


def strip_loader_variables(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Pure: the environment without LOADER_VARIABLES (any LD_ variable but LD_LIBRARY_PATH and LD_BIND_NOW),
    and the names removed, to warn about."""
    out: dict[str, str] = {}
    removed: list[str] = []
    for key, value in env.items():
        loader = key in LOADER_VARIABLES or (key.startswith("LD_") and key not in ("LD_LIBRARY_PATH", "LD_BIND_NOW"))
        if loader:
            removed.append(key)
        else:
            out[key] = value
    return out, sorted(removed)


def safe_loader_env(
    env: Mapping[str, str], *, strict: bool = False, unsafe: Callable[[str], str | None] = unsafe_folder
) -> tuple[dict[str, str], list[str]]:
    """The environment with loader variables removed and LD_LIBRARY_PATH cleaned: empty, relative and
    duplicate entries dropped, and entries another user could write to (the folder, a folder above it, a
    library symlink in it) dropped too, or refused with a ConfigError when `strict`. Returns (env, warnings)."""
    out, removed = strip_loader_variables(env)
    warnings = [f"removed {key} from the environment of the processes heygem-launch starts" for key in removed]
    if "LD_LIBRARY_PATH" in out:
        entries, dropped = merge_entries([out["LD_LIBRARY_PATH"].split(":")])
        warnings += [f"LD_LIBRARY_PATH: dropped relative entry {entry!r}" for entry in dropped]
        kept = []
        for entry in entries:
            reason = unsafe(entry)
            if reason and strict:
                raise ConfigError(
                    f"LD_LIBRARY_PATH: {entry} is unsafe: {reason}; anyone could plant a library there "
                    "(chmod o-w it or remove it from LD_LIBRARY_PATH)"
                )
            if reason:
                warnings.append(f"LD_LIBRARY_PATH: dropped {entry}: {reason}")
            else:
                kept.append(entry)
        if kept:
            out["LD_LIBRARY_PATH"] = ":".join(kept)
        else:
            del out["LD_LIBRARY_PATH"]
    return out, warnings


def launcher_child_env(env: Mapping[str, str]) -> dict[str, str]:
    """What supervisord (and through it the app's wrapper) gets: the launcher's environment, loader-safe,
    without the launcher's own HEYGEM_* settings."""
    safe, _warnings = safe_loader_env(env)
    return {k: v for k, v in safe.items() if not k.startswith(OWN_PREFIX)}
