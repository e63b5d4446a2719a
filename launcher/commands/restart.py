"""`restart` (from `docker exec`): a request file and a SIGHUP to the running service, then its answer."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from launcher import exitcodes
from launcher.commands import client
from launcher.errors import LaunchError
from launcher.service.restarting import new_request_id
from launcher.system.rundir import RunDir, read_json, running_pid, write_json

RESTART_MARGIN = 30.0  # beyond the preflight timeout, the stop grace and the new app's time to be ready
# Flags naming a path are made absolute here: the service resolves them from its own working directory.
PATH_FLAGS = ("HEYGEM_ENV_FILE", "HEYGEM_APP_DIR", "HEYGEM_CONDA_ROOT", "HEYGEM_APP_LOG")


def request_flags(flags: dict[str, str | None], cwd: Path) -> dict[str, str]:
    """The flags to send with a restart: all but the run dir (it cannot move), paths made absolute."""
    out: dict[str, str] = {}
    for key, value in flags.items():
        if value is None or key == client.RUN_DIR_KEY:
            continue
        if (key in PATH_FLAGS or (key == "HEYGEM_CONDA_ENV" and "/" in value)) and value and "\0" not in value:
            value = str(cwd / Path(value).expanduser()) if not value.startswith(("/", "~")) else value
        out[key] = value
    return out


def restart(run: RunDir, flags: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Ask the running launcher to restart with `flags` over its own, and wait for its answer: a request file
    with an id and the flags, then SIGHUP (only to a pid proven to be that run dir's heygem-launch)."""
    run, pid = client.running_service(run)
    data = client.saved(run)
    request_id = new_request_id()
    write_json(
        run.restart_request(request_id),
        {"id": request_id, "flags": request_flags(flags or {}, Path.cwd()), "requested_at": time.time()},
    )
    os.kill(pid, signal.SIGHUP)
    wait = (
        client.flag_seconds(data, "preflight_timeout", 90.0)
        + client.flag_seconds(data, "stop_grace", 8.0)
        + client.flag_seconds(data, "restart_timeout", 180.0)
        + RESTART_MARGIN
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        result = read_json(run.restart_result)
        if isinstance(result, dict) and result.get("id") == request_id:
            return result
        if running_pid(run) is None:
            raise LaunchError("heygem-launch stopped during the restart", exit_code=exitcodes.UNAVAILABLE)
        time.sleep(0.1)
    raise LaunchError(f"no restart result from heygem-launch pid {pid} in time", exit_code=exitcodes.SOFTWARE)
