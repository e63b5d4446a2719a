"""`status`: the running service's state, its apps and their last tasks, from its run dir and supervisord."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from launcher.commands.probes import preflight_result
from launcher.config.instances import policy_met
from launcher.config.settings import Settings
from launcher.service.control import CALL_ERRORS, Supervisor
from launcher.system import procs
from launcher.system.rundir import RunDir, check_trusted, read_json, running_pid


@dataclass(frozen=True)
class Status:
    running: bool
    launcher_pid: int | None
    programs: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Every app that was not given up (HEYGEM_GPU_POLICY=any) is RUNNING."""
        live = [p for p in self.programs if not p.get("given_up")]
        return self.running and bool(live) and all(p["state"] == "RUNNING" for p in live)

    @property
    def ready(self) -> bool:
        """Every app that runs is ready (with HEYGEM_GPU_POLICY=any, one), as `probe ready` sees it."""
        readies = [bool(p.get("ready")) for p in self.programs if not p.get("given_up")]
        return self.running and policy_met(self.state.get("gpu_policy"), readies)

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """The last tasks of every app, oldest first; each names its app when there are several."""
        if len(self.programs) <= 1:
            return list(self.state.get("tasks") or [])
        tasks = [{**t, "app": p["name"]} for p in self.programs for t in p.get("tasks") or []]
        return sorted(tasks, key=lambda t: t.get("started_at") or 0)

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Every ONNX Runtime session the apps' processes reported (the session audit), oldest first."""
        keys = ("app", "pid", "model", "requested", "providers", "error", "at")
        found = [{k: s.get(k) for k in keys} for p in self.programs for s in p.get("sessions") or []]
        return sorted(found, key=lambda s: s.get("at") or 0)

    def as_dict(self) -> dict[str, Any]:
        preflight = self.state.get("preflight") or {}
        return {
            "ok": self.ok,
            "running": self.running,
            "launcher_pid": self.launcher_pid,
            "programs": self.programs,
            "preflight": preflight,
            "ready": self.ready,
            "missing_markers": self.state.get("missing_markers", []),
            "incident": self.state.get("incident"),
            "last_incident": self.state.get("last_incident"),
            "tasks": self.tasks,
            "sessions": self.sessions,
            "gpu_policy": self.state.get("gpu_policy"),
            "error": self.error or None,
        }


def status(settings: Settings | RunDir) -> Status:
    """The service's state from its run dir (never from the .env file); accepts the settings or the run dir."""
    run = settings if isinstance(settings, RunDir) else RunDir(settings.run_dir)
    check_trusted(run)
    pid = running_pid(run)
    if pid is None:
        return Status(False, None, error=f"not running (no live heygem-launch for run dir {run.path})")
    state = read_json(run.state) or {}
    try:
        infos = Supervisor(run).call("getAllProcessInfo")
    except CALL_ERRORS as exc:
        return Status(False, pid, state=state, error=f"supervisord does not answer: {exc}")
    apps = {a.get("program"): a for a in state.get("instances") or [] if isinstance(a, dict)}
    # An older launcher's state has one app, at the top level.
    programs = [_program(info, apps.get(info["name"], state), state) for info in infos]
    # Apps whose GPU the preflight refused (HEYGEM_GPU_POLICY=any) are not supervisord's: listed as such.
    seen = {p["name"] for p in programs}
    programs += [_program(None, app, state, name) for name, app in apps.items() if name not in seen]
    return Status(True, pid, programs, state)


def _program(info: dict[str, Any] | None, app: dict[str, Any], state: dict[str, Any], name: str = "") -> dict[str, Any]:
    """One app's line of `status`: supervisord's view of it (`info`; None for an app never started) over
    the service's (`app`, from the state file)."""
    statename = info["statename"] if info else "NOT STARTED"
    wrapper = info["pid"] or None if info else None
    return {
        "name": info["name"] if info else name,
        "state": statename,
        "pid": procs.first_child(wrapper) if wrapper else None,
        "wrapper_pid": wrapper,
        "uptime_s": (info["now"] - info["start"]) if info and statename == "RUNNING" else 0,
        "restarts": app.get("restarts", 0),
        "last_exit": app.get("last_exit") or None,
        # Waiting out its backoff (HEYGEM_RESTART_DELAY): the wait, and the seconds left of it.
        "restart_backoff_s": app.get("restart_backoff") or 0.0,
        "restart_in_s": _left(app.get("restart_at")) if statename != "RUNNING" else None,
        "description": info["description"] if info else app.get("given_up") or "",
        "port": app.get("port", state.get("app_port")),
        "cuda_visible_devices": app.get("cuda_visible_devices"),
        "gpu": app.get("gpu"),
        # As `probe ready` has it: the workers up and supervisord's RUNNING (HEYGEM_START_SECONDS passed).
        "ready": bool(app.get("ready")) and statename == "RUNNING",
        "incident": app.get("incident") if info else None,
        "given_up": app.get("given_up"),
        "tasks": app.get("tasks", []) if info else [],
        "sessions": app.get("sessions", []) if info else [],
    }


def _left(at: object) -> float | None:
    return round(max(0.0, at - time.time()), 1) if isinstance(at, (int, float)) else None


def render_status(result: Status) -> str:
    if not result.running:
        return f"heygem-launch: {result.error}"
    lines = [f"heygem-launch pid {result.launcher_pid}"]
    several = len(result.programs) > 1
    for p in result.programs:
        lines.append(
            f"  {p['name']:<6} {p['state']:<9} pid {p['pid'] or '-':<8} up {p['uptime_s']:>6} s  "
            f"restarts {p['restarts']}" + (f"  last exit: {p['last_exit']}" if p["last_exit"] else "")
        )
        if p["restart_in_s"] is not None:
            lines.append(f"         starts again in {p['restart_in_s']:g} s (backoff {p['restart_backoff_s']:g} s)")
        if several:
            gone = f"  given up: {p['given_up']}" if p.get("given_up") else ""
            lines.append(
                f"         {p.get('gpu')}, CUDA_VISIBLE_DEVICES={p.get('cuda_visible_devices')}, port {p.get('port')}, "
                f"ready: {'yes' if p.get('ready') else 'no'}{gone}"
            )
    pre = result.state.get("preflight") or {}
    if pre:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pre.get("checked_at", 0)))
        provider = pre.get("provider")
        verdict = {
            "passed": f"passed on {provider}",
            "skipped": f"skipped (HEYGEM_PREFLIGHT=skip), {provider} not checked,",
        }.get(preflight_result(pre), f"refused [{pre.get('cause')}] on {provider}")
        lines.append(f"  last preflight: {verdict} at {when}")
    state = result.state
    missing = state.get("missing_markers") or []
    lines.append(
        "  ready: yes" if result.ready else "  ready: no" + (f" (not logged: {'; '.join(missing)})" if missing else "")
    )
    if state.get("incident"):
        lines.append(f"  incident open: {state['incident'].get('kind')} ({state['incident'].get('snapshot')})")
    lines += _session_lines(result.sessions)
    for task in result.tasks[-5 * max(1, len(result.programs)) :]:
        fps = f"{task['fps']:.2f} frames/s" if task.get("fps") is not None else "- frames/s"
        where = f" on {task['app']}" if "app" in task else ""
        lines.append(f"  task {task['code']}{where}: {task['outcome']}, {task['frames']} frames, {fps}")
    return "\n".join(lines)


def _session_lines(sessions: list[dict[str, Any]]) -> list[str]:
    """The last sessions, each with the provider ONNX Runtime gave it: proof of where the app's models run."""
    lines = []
    for session in sessions[-10:]:
        got = ", ".join(session.get("providers") or []) or f"none: {session.get('error')}"
        lines.append(f"  session {session.get('model')} (pid {session.get('pid')}, {session.get('app')}): {got}")
    return lines
