"""What `conda activate` does, without conda: resolve the env's prefix and compute its environment.

`activation_env` is pure; only `resolve_prefix`, `read_state_vars` and `run_activate_scripts` read
the disk or start a shell.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.config import values
from launcher.errors import ConfigError
from launcher.preflight import envrules

ACTIVATE_SCRIPT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CondaEnv:
    """The app's env: its prefix, its name, its python."""

    prefix: Path
    name: str  # what conda puts in CONDA_DEFAULT_ENV
    python: Path
    is_conda: bool  # False for a plain venv or system prefix (no conda-meta/)


def list_envs(conda_root: Path) -> list[str]:
    found = ["base"] if (conda_root / "conda-meta").is_dir() else []
    envs_dir = conda_root / "envs"
    if envs_dir.is_dir():
        found += sorted(p.name for p in envs_dir.iterdir() if (p / "conda-meta").is_dir())
    return found


def _python_of(prefix: Path) -> Path | None:
    for name in ("python", "python3"):
        candidate = prefix / "bin" / name
        if candidate.exists():
            return candidate
    return None


def resolve_prefix(conda_root: Path, conda_env: str) -> CondaEnv:
    """The env named by HEYGEM_CONDA_ENV: a name under CONDA_ROOT/envs, a path, or '' for our own python."""
    if not conda_env:
        # The launcher's own interpreter: a venv or the system python, not a conda env by default.
        prefix = Path(sys.prefix)
        return CondaEnv(prefix, prefix.name, Path(sys.executable), (prefix / "conda-meta").is_dir())
    if "/" in conda_env:
        try:
            prefix = values.expand_user(conda_env)
        except ValueError as exc:
            raise ConfigError(f"HEYGEM_CONDA_ENV={conda_env!r}: {exc}") from None
        name = conda_env
        if prefix.parent == conda_root / "envs":
            name = prefix.name
        elif prefix == conda_root:
            name = "base"
    elif conda_env == "base":
        prefix, name = conda_root, "base"
    else:
        prefix, name = conda_root / "envs" / conda_env, conda_env
    if not prefix.is_dir():
        envs = list_envs(conda_root)
        found = ", ".join(envs) if envs else f"none under {conda_root}"
        raise ConfigError(f"HEYGEM_CONDA_ENV={conda_env!r}: no env at {prefix} (envs found: {found})")
    python = _python_of(prefix)
    if python is None:
        raise ConfigError(f"HEYGEM_CONDA_ENV={conda_env!r}: {prefix}/bin has no python")
    return CondaEnv(prefix.absolute(), name, python, (prefix / "conda-meta").is_dir())


def read_state_vars(prefix: Path) -> dict[str, str]:
    """Variables stored by `conda env config vars set` (conda-meta/state)."""
    state = prefix / "conda-meta" / "state"
    if not state.is_file():
        return {}
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
        env_vars = data.get("env_vars", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{state}: cannot read conda env vars: {exc}") from None
    if not isinstance(env_vars, dict):
        raise ConfigError(f"{state}: env_vars is not a mapping")
    return {str(k): str(v) for k, v in env_vars.items()}


def activate_scripts(prefix: Path) -> list[Path]:
    folder = prefix / "etc" / "conda" / "activate.d"
    return sorted(folder.glob("*.sh")) if folder.is_dir() else []


def activation_env(base: Mapping[str, str], env: CondaEnv, state_vars: Mapping[str, str]) -> dict[str, str]:
    """Pure: the environment `conda activate` (or a venv's `activate`) would leave, before activate.d
    (`envrules.activation_env`, which the early probe shares)."""
    return envrules.activation_env(base, str(env.prefix), env.name, env.is_conda, state_vars)


_STATUS_MARK = b"heygem-activate.d-status:"


def run_activate_scripts(env: dict[str, str], scripts: list[Path], cwd: Path) -> tuple[dict[str, str], list[str]]:
    """Source the env's activate.d scripts in one shell, as `conda activate` does; take the environment left.

    conda sources each script in turn and goes on whatever a script returns (its generated activate
    script is a list of `. "script"` lines), so a non-zero status is a warning here, not a refusal. A script
    that ends the shell (`exit`) leaves no environment: that is a ConfigError.
    """
    if not scripts:
        return env, []
    shell = shutil.which("bash") or "/bin/sh"
    # Scripts' own output goes to stderr so that stdout carries only the NUL-separated environment.
    body = "__heygem_status=''\n"
    body += "".join(f'. "{script}" 1>&2; __heygem_status="$__heygem_status $?"\n' for script in scripts)
    body += f"printf '\\n{_STATUS_MARK.decode()}%s\\n' \"$__heygem_status\" >&2\nenv -0\n"
    try:
        proc = subprocess.run(
            [shell, "-c", body],
            env=env,
            cwd=cwd,
            capture_output=True,
            timeout=ACTIVATE_SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{scripts[0].parent}: activate.d scripts did not finish in {ACTIVATE_SCRIPT_TIMEOUT:.0f} s"
        ) from None
    stderr = proc.stderr.split(b"\n")
    marks = [line for line in stderr if line.startswith(_STATUS_MARK)]
    if proc.returncode != 0 or not marks:
        last = [line.decode(errors="replace") for line in stderr if line.strip()][-1:] or ["no output"]
        raise ConfigError(
            f"{scripts[0].parent}: an activate.d script ended the shell (exit {proc.returncode}): {last[0]}"
        )
    warnings = []
    statuses = marks[-1][len(_STATUS_MARK) :].split()
    for script, status in zip(scripts, statuses, strict=False):
        if status != b"0":
            said = [line.decode(errors="replace") for line in stderr[: stderr.index(marks[-1])] if line.strip()][-1:]
            warnings.append(
                f"activate.d: {script} returned {status.decode()} (conda activate goes on, so does the launcher)"
                + (f"; last output: {said[0]}" if said else "")
            )
    result: dict[str, str] = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep and key:
            result[key] = value
    # Variables the shell itself sets are not the scripts' doing.
    for noise in ("_", "SHLVL", "PWD", "OLDPWD"):
        if noise in env:
            result[noise] = env[noise]
        else:
            result.pop(noise, None)
    return result, warnings


def activate(base: Mapping[str, str], env: CondaEnv, cwd: Path) -> tuple[dict[str, str], list[str]]:
    """The env's environment as `conda activate` leaves it, and warnings about its activate.d scripts."""
    state = read_state_vars(env.prefix) if env.is_conda else {}
    out = activation_env(base, env, state)
    return run_activate_scripts(out, activate_scripts(env.prefix) if env.is_conda else [], cwd)
