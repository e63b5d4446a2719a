"""The client side (`status`, `restart`, probes, `doctor`, from `docker exec`): find the service's run dir
and read the service's own settings, without depending on the .env file, which an operator may be editing
while the service runs healthy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher import exitcodes
from launcher.config.settings import ENV_FILE_KEY, Settings, build_settings, find_env_file, read_env_file, run_dir_value
from launcher.errors import ConfigError, LaunchError
from launcher.system.rundir import RunDir, check_trusted, read_json, running_pid

RUN_DIR_KEY = "HEYGEM_RUN_DIR"


def client_run_dir(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> RunDir:
    """The run dir from the flag, else the environment, else the .env file (read leniently: a file that does
    not parse is the service's business, not the client's), else the default. Raises ConfigError when the
    value itself is bad."""
    environ = os.environ if environ is None else environ
    raw = flags.get(RUN_DIR_KEY) or environ.get(RUN_DIR_KEY)
    if raw is None:
        try:
            env_file = find_env_file(flags.get(ENV_FILE_KEY), environ, Path.cwd())
            raw = (read_env_file(env_file) if env_file else {}).get(RUN_DIR_KEY)
        except ConfigError:
            raw = None
    return RunDir(run_dir_value(raw))


def saved(run: RunDir) -> dict[str, Any] | None:
    """The running generation's settings file (written by the service), if present and trusted."""
    data = read_json(run.settings)
    return data if isinstance(data, dict) and isinstance(data.get("raw"), dict) else None


def service_settings(run: RunDir) -> Settings | None:
    """The settings the running service uses, rebuilt from its run dir; None when there are none to read."""
    data = saved(run)
    if data is None:
        return None
    raw = {str(k): str(v) for k, v in data["raw"].items() if isinstance(v, str)}
    app_env = data.get("app_env") if isinstance(data.get("app_env"), dict) else {}
    env_file = Path(data["env_file"]) if isinstance(data.get("env_file"), str) else None
    try:
        return build_settings({str(k): str(v) for k, v in app_env.items()}, {}, raw, env_file=env_file, cwd=Path("/"))
    except ConfigError:
        return None  # written by another version: the caller falls back to the files


def flag_seconds(data: Mapping[str, Any] | None, key: str, default: float) -> float:
    value = (data or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and 0 < value < 1e7 else default


def running_service(run: RunDir) -> tuple[RunDir, int]:
    """The run dir, trusted, and the pid of the heygem-launch that holds it; LaunchError (69) when none does."""
    check_trusted(run)
    pid = running_pid(run)
    if pid is None:
        raise LaunchError(
            f"heygem-launch is not running with run dir {run.path} (no live pid file there)",
            exit_code=exitcodes.UNAVAILABLE,
        )
    return run, pid
