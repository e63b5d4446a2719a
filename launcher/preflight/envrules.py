"""The rules of the app's environment that the early probe (launcher/preflight/early.py) shares with
`appenv.prepare_environment`: the library path's safety, `conda activate`'s variables, NVIDIA's wheel folders.

On plain strings, importing only `os` and `stat`: the early probe starts before the launcher loads
`dataclasses` and `pathlib` (~12 ms of the probe's critical path), and it must apply these rules exactly as
the app's environment does, so they exist once, here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping

# The launcher's own settings and switches: nothing the app or supervisord should see.
OWN_PREFIX = "HEYGEM_"
# Disables CUDA in ONNX Runtime outright; a leftover from debugging must not decide the app's provider.
ORT_KILL_SWITCH = "ORT_CUDA_UNAVAILABLE"


def merge_entries(groups: Iterable[Iterable[str]]) -> tuple[list[str], list[str]]:
    """Pure: concatenate in order, keep the first of duplicates, drop empty and relative entries.
    Returns (entries, dropped) where dropped lists the non-empty relative entries, to warn about. An empty
    entry makes the loader search the current directory, and a relative one depends on it: neither ever
    reaches a process the launcher starts.
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


def _parents(path: str) -> Iterable[str]:
    """The folders above an absolute, normalised `path`, nearest first, `/` last (as pathlib's `parents`)."""
    while path != "/":
        path = os.path.dirname(path)
        yield path


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
    for parent in _parents(real):
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


def _sorted_names(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def site_packages(prefix: str) -> list[str]:
    """`prefix`'s `lib/python3*/site-packages` folders, sorted."""
    lib = os.path.join(prefix, "lib")
    found = (os.path.join(lib, name, "site-packages") for name in _sorted_names(lib) if name.startswith("python3"))
    return [site for site in found if os.path.isdir(site)]


def nvidia_wheel_dirs(prefix: str) -> list[str]:
    """Lib folders of NVIDIA's pip wheels: CUDA 12 `nvidia/<lib>/lib` and CUDA 13 `nvidia/cu13/lib`.
    Both layouts are one level under `nvidia/`, so one pattern finds them; cuDNN keeps `nvidia/cudnn/lib`.
    """
    found: list[str] = []
    for site in site_packages(prefix):
        nvidia = os.path.join(site, "nvidia")
        found += [lib for name in _sorted_names(nvidia) if os.path.isdir(lib := os.path.join(nvidia, name, "lib"))]
    return found


def _without(path_value: str, folder: str) -> list[str]:
    return [p for p in path_value.split(":") if p and p != folder]


def activation_env(
    base: Mapping[str, str], prefix: str, name: str, is_conda: bool, state_vars: Mapping[str, str]
) -> dict[str, str]:
    """Pure but for one look at `prefix/pyvenv.cfg`: the environment `conda activate` (or a venv's `activate`)
    would leave for the env at absolute `prefix`, before its activate.d scripts. Source: conda's
    `conda/activate.py` (`_build_activate_stack`: CONDA_PREFIX, CONDA_SHLVL, CONDA_PREFIX_<n> of a replaced
    env, CONDA_DEFAULT_ENV, CONDA_PROMPT_MODIFIER, the env's config vars) and CPython's `venv` activate script."""
    out = dict(base)
    bin_dir = os.path.join(prefix, "bin")
    path = _without(out.get("PATH", ""), bin_dir)
    if is_conda:
        old_prefix = out.get("CONDA_PREFIX")
        try:
            old_level = int(out.get("CONDA_SHLVL", "0"))
        except ValueError:
            old_level = 0
        if old_prefix and old_prefix != prefix:
            # Replacing the active env, as `conda activate` without --stack does.
            path = _without(":".join(path), f"{old_prefix}/bin")
            out[f"CONDA_PREFIX_{old_level}"] = old_prefix
            out["CONDA_SHLVL"] = str(old_level + 1)
        elif not old_prefix:
            out["CONDA_SHLVL"] = str(old_level + 1)
        out["CONDA_PREFIX"] = prefix
        out["CONDA_DEFAULT_ENV"] = name
        out["CONDA_PROMPT_MODIFIER"] = f"({name}) "
        out.update(state_vars)
    elif os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):
        out["VIRTUAL_ENV"] = prefix
    out["PATH"] = ":".join([bin_dir, *path])
    return out


def audit_pythonpath(pythonpath: str, audit_dir: str) -> str:
    """Pure: PYTHONPATH with the session audit's folder first (before the app's own entries, in their order; no
    empty entry, which would put the working directory on the path)."""
    return ":".join([audit_dir, *(entry for entry in pythonpath.split(":") if entry and entry != audit_dir)])


# The session audit: a folder holding only sitecustomize.py, first on the app's PYTHONPATH, and the socket its
# records go to (read by the service; the variable's name is the audit's, audit/sitecustomize.py).
AUDIT_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "audit")
AUDIT_SOCKET_VARIABLE = "HEYGEMLAUNCH_AUDIT_SOCKET"
