"""The app's environment: what the probe runs with, and exactly what the app will get."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.config import values
from launcher.config.settings import Settings
from launcher.errors import ConfigError
from launcher.preflight import conda, envrules
from launcher.preflight.envrules import ORT_KILL_SWITCH, OWN_PREFIX
from launcher.preflight.libpath import LibraryPath, build_library_path
from launcher.preflight.loaderenv import safe_loader_env, strip_loader_variables
from launcher.system.rundir import SESSIONS_SOCKET_NAME

PORT_VARIABLE = "GRADIO_SERVER_PORT"  # how Gradio, and so HeyGem, is told its port
DEFAULT_PORT = 7860
# The session audit: a folder holding only sitecustomize.py, first on the app's PYTHONPATH, and the socket its
# records go to (read by the service; the variable's name is the audit's, audit/sitecustomize.py).
AUDIT_DIR = Path(envrules.AUDIT_DIR)
AUDIT_SOCKET_VARIABLE = envrules.AUDIT_SOCKET_VARIABLE


@dataclass(frozen=True)
class AppEnvironment:
    """The environment the probe runs with and the app gets, the env it comes from, and what was changed."""

    env: dict[str, str]
    conda: conda.CondaEnv
    library_path: LibraryPath
    warnings: tuple[str, ...]
    port: int = DEFAULT_PORT


def base_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """Pure: the process environment over the app's `.env` keys (same layering as the settings), without the
    launcher's own HEYGEM_* settings (they are not the app's). Raises ConfigError for a variable no
    environment file can hold (bytes that are not UTF-8)."""
    env = {k: v for k, v in {**settings.app_env, **environ}.items() if not k.startswith(OWN_PREFIX)}
    check_text(env, "in the environment")
    return env


def check_text(env: Mapping[str, str], where: str) -> None:
    """ConfigError for a variable that no environment file (JSON, UTF-8) can carry to the app."""
    for key, value in env.items():
        try:
            values.text(key)
            values.text(value)
        except ValueError as exc:
            raise ConfigError(f"environment variable {values.printable(key)!r} ({where}): {exc}") from None


def prepare_environment(settings: Settings, environ: Mapping[str, str]) -> AppEnvironment:
    env_info = conda.resolve_prefix(settings.conda_root, settings.conda_env)
    # Loader-safe before the activate.d shell runs in the app dir, and again after (a script may set more).
    base, warnings = safe_loader_env(base_environment(settings, environ), strict=True)
    activated, activate_warnings = conda.activate(base, env_info, settings.app_dir)
    warnings += activate_warnings
    env, more = strip_loader_variables(activated)
    check_text(env, "set by an activate.d script")
    warnings += [f"removed {key}, set by an activate.d script, from the app's environment" for key in more]
    if ORT_KILL_SWITCH in env:
        warnings.append(
            f"removed {ORT_KILL_SWITCH}={env.pop(ORT_KILL_SWITCH)!r} from the app's environment: "
            "it disables ONNX Runtime's CUDA provider"
        )
    # Inherited after activation: an activate.d script may have set LD_LIBRARY_PATH itself.
    library_path = build_library_path(env_info.prefix, settings.extra_library_path, env.get("LD_LIBRARY_PATH", ""))
    warnings += library_path.warnings
    if library_path.entries:
        env["LD_LIBRARY_PATH"] = library_path.value
    else:
        env.pop("LD_LIBRARY_PATH", None)
    # Under supervisord's pipe, Python 3.8 block-buffers print(): Gradio's URL and ONNX Runtime's Python-level
    # "EP Error ... Falling back" would arrive at exit only. A user's own value wins.
    env.setdefault("PYTHONUNBUFFERED", "1")
    if settings.session_audit:
        env.update(audit_environment(env.get("PYTHONPATH", ""), settings.run_dir))
    port, port_warning = app_port(settings.app_port, env.get(PORT_VARIABLE))
    if port_warning:
        warnings.append(port_warning)
    env[PORT_VARIABLE] = str(port)
    return AppEnvironment(env, env_info, library_path, tuple(warnings), port)


def app_port(setting: int | None, inherited: str | None) -> tuple[int, str | None]:
    """Pure: HEYGEM_APP_PORT when set, else the GRADIO_SERVER_PORT the app would have had, else 7860."""
    if setting is not None:
        if inherited and inherited != str(setting):
            return setting, f"{PORT_VARIABLE}={inherited} replaced by HEYGEM_APP_PORT={setting}"
        return setting, None
    if inherited and inherited.isascii() and inherited.isdigit() and 0 < int(inherited) < 65536:
        return int(inherited), None
    if inherited:
        return DEFAULT_PORT, f"{PORT_VARIABLE}={inherited!r} is not a port; using {DEFAULT_PORT}"
    return DEFAULT_PORT, None


def audit_environment(pythonpath: str, run_dir: Path) -> dict[str, str]:
    """Pure: the variables that load the session audit into each of the app's Python processes: its folder
    first on PYTHONPATH (before the app's own entries, in their order; no empty entry, which would put the
    working directory on the path), and the socket in the run dir its records go to."""
    pythonpath = envrules.audit_pythonpath(pythonpath, str(AUDIT_DIR))
    return {"PYTHONPATH": pythonpath, AUDIT_SOCKET_VARIABLE: str(run_dir / SESSIONS_SOCKET_NAME)}
