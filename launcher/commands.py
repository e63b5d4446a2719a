"""`status` and `restart`: talk to a running heygem-launch through its run dir (docker exec)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from launcher import exitcodes, procs
from launcher.control import CALL_ERRORS, Supervisor
from launcher.errors import LaunchError
from launcher.rundir import RunDir, read_json, running_pid
from launcher.settings import Settings

RESTART_MARGIN = 30.0  # beyond the preflight timeout and the stop grace


def _service(settings: Settings) -> tuple[RunDir, int]:
    run = RunDir(settings.run_dir)
    pid = running_pid(run)
    if pid is None:
        raise LaunchError(
            f"heygem-launch is not running with run dir {run.path} (no live pid file there)",
            exit_code=exitcodes.UNAVAILABLE,
        )
    return run, pid


@dataclass(frozen=True)
class Status:
    running: bool
    launcher_pid: int | None
    programs: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.running and all(p["state"] == "RUNNING" for p in self.programs)

    def as_dict(self) -> dict[str, Any]:
        preflight = self.state.get("preflight") or {}
        return {
            "ok": self.ok,
            "running": self.running,
            "launcher_pid": self.launcher_pid,
            "programs": self.programs,
            "preflight": preflight,
            "error": self.error or None,
        }


def status(settings: Settings) -> Status:
    run = RunDir(settings.run_dir)
    pid = running_pid(run)
    if pid is None:
        return Status(False, None, error=f"not running (no live heygem-launch for run dir {run.path})")
    state = read_json(run.state) or {}
    try:
        infos = Supervisor(run).call("getAllProcessInfo")
    except CALL_ERRORS as exc:
        return Status(False, pid, state=state, error=f"supervisord does not answer: {exc}")
    programs = []
    for info in infos:
        wrapper = info["pid"] or None
        programs.append(
            {
                "name": info["name"],
                "state": info["statename"],
                "pid": procs.first_child(wrapper) if wrapper else None,
                "wrapper_pid": wrapper,
                "uptime_s": (info["now"] - info["start"]) if info["statename"] == "RUNNING" else 0,
                "restarts": state.get("restarts", 0),
                "last_exit": state.get("last_exit") or None,
                "description": info["description"],
            }
        )
    return Status(True, pid, programs, state)


def render_status(result: Status) -> str:
    if not result.running:
        return f"heygem-launch: {result.error}"
    lines = [f"heygem-launch pid {result.launcher_pid}"]
    for p in result.programs:
        lines.append(
            f"  {p['name']:<6} {p['state']:<9} pid {p['pid'] or '-':<8} up {p['uptime_s']:>6} s  "
            f"restarts {p['restarts']}" + (f"  last exit: {p['last_exit']}" if p["last_exit"] else "")
        )
    pre = result.state.get("preflight") or {}
    if pre:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pre.get("checked_at", 0)))
        verdict = "passed" if pre.get("ok") else f"refused [{pre.get('cause')}]"
        lines.append(f"  last preflight: {verdict} on {pre.get('provider')} at {when}")
    return "\n".join(lines)


def restart(settings: Settings) -> dict[str, Any]:
    """SIGHUP the running launcher and wait for the outcome of the restart it then performs."""
    run, pid = _service(settings)
    sent_at = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + settings.preflight_timeout + settings.stop_grace + RESTART_MARGIN
    while time.monotonic() < deadline:
        result = read_json(run.restart_result)
        if isinstance(result, dict) and result.get("requested_at", 0) >= sent_at - 0.001:
            return result
        if running_pid(run) is None:
            raise LaunchError("heygem-launch stopped during the restart", exit_code=exitcodes.UNAVAILABLE)
        time.sleep(0.1)
    raise LaunchError(f"no restart result from heygem-launch pid {pid} in time", exit_code=exitcodes.SOFTWARE)
