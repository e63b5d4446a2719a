"""Is HEYGEM_APP_COMMAND something the app's environment can start? Checked by the preflight: before the probe
when the app is to be started, while it runs for `--check-only` and `doctor`.

Without it a missing script passes `--check-only` and then crash-loops under supervisord.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from launcher.errors import ConfigError
from launcher.preflight.libpath import site_packages

# Python's own options that take a value in the next word (python --help); the script or -m follows them.
_OPTIONS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}


def _python_target(args: tuple[str, ...]) -> tuple[str, str] | None:
    """('script', 'app.py') or ('module', 'pkg.mod') for `python [options] X`; None for -c, stdin, or nothing."""
    words = iter(args)
    for word in words:
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif word == "-m":
            module = next(words, None)
            return ("module", module) if module else None
        elif word.startswith("-m") and len(word) > 2:
            return "module", word[2:]
        elif word == "-c" or word.startswith("-c") or word == "-":
            return None
        elif word.startswith("-"):
            continue
        else:
            return "script", word
    return None


def _module_found(module: str, folders: list[Path]) -> bool:
    parts = module.split(".")
    if parts[0] in sys.stdlib_module_names:  # the standard library: the same names in 3.8 as here, near enough
        return True
    for folder in folders:
        top = folder / parts[0]
        if (folder / f"{parts[0]}.py").is_file() or top.is_dir() or any(folder.glob(f"{parts[0]}.*.so")):
            return True
    return False


def check_app_command(argv: tuple[str, ...], app_dir: Path, env: Mapping[str, str], prefix: Path) -> None:
    """Raise ConfigError (exit 78) naming HEYGEM_APP_COMMAND when its executable does not resolve on the
    app's PATH (or, with a '/', from the app dir), or when `python X.py` / `python -m mod` names a script or
    module that is neither in the app dir nor (for -m) installed in the env."""
    executable = argv[0]
    shown = " ".join(argv)
    if "/" in executable:
        path = app_dir / executable
        found = str(path) if os.access(path, os.X_OK) and path.is_file() else None
    else:
        found = shutil.which(executable, path=env.get("PATH", ""))
    if found is None:
        where = f"in the app dir {app_dir}" if "/" in executable else "on the app's PATH"
        raise ConfigError(f"HEYGEM_APP_COMMAND={shown!r}: {executable!r} is not an executable {where}")
    if not Path(executable).name.startswith("python"):
        return
    target = _python_target(argv[1:])
    if target is None:
        return
    kind, name = target
    if kind == "script":
        if not (app_dir / name).is_file():
            raise ConfigError(f"HEYGEM_APP_COMMAND={shown!r}: {name} not found in the app dir {app_dir}")
    elif not _module_found(name, [app_dir, *site_packages(prefix), *sorted(prefix.glob("lib/python3*"))]):
        raise ConfigError(
            f"HEYGEM_APP_COMMAND={shown!r}: module {name} not found in the app dir {app_dir} nor in {prefix}"
        )
