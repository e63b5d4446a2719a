"""A diagnosis snapshot per incident: one JSON file in the run dir, written before the cure is applied."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from launcher import gpu, procs
from launcher.rundir import RunDir, write_json
from launcher.watchdog import Incident, Watchdog


def snapshot(
    incident: Incident, watchdog: Watchdog, group: int | None, app_pid: int | None, stall_seconds: float
) -> dict[str, Any]:
    """The trigger, the GPU, what the app's processes really have loaded, the last lines, the task's rate."""
    members = procs.group_members(group) if group else []
    environ = procs.environ_of(app_pid) if app_pid else {}
    uses = [u for u in (procs.gpu_use(p.pid) for p in members) if u is not None]
    inventory = gpu.inventory()
    return {
        "kind": incident.kind,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(incident.at)),
        "trigger": incident.line,
        "gpus": inventory.as_dict(),
        "app": {
            "pid": app_pid,
            "process_group": group,
            "ld_library_path": environ.get("LD_LIBRARY_PATH"),
            "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
            "processes": [
                {
                    "pid": u.pid,
                    "cuda_context": u.cuda_context,
                    "libraries": list(u.libraries),
                    "nvidia_devices": list(u.devices),
                }
                for u in uses
            ],
            "any_cuda_context": any(u.cuda_context for u in uses),
        },
        "task": {
            "frames_per_s": watchdog.frames_per_second(),
            "steps_seen": len(watchdog.progress),
            "last_progress": watchdog.last_progress_line.strip() or None,
            "stall_seconds": stall_seconds,
        },
        "last_lines": list(watchdog.lines),
    }


def write(run: RunDir, incident: Incident, data: dict[str, Any]) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(incident.at)) + f"{incident.at % 1:.3f}"[1:]
    path = run.path / f"incident-{stamp}-{incident.kind}.json"
    write_json(path, data)
    return path


def summary(incident: Incident, data: dict[str, Any], path: Path) -> str:
    """The one log line for an incident."""
    rate = data["task"]["frames_per_s"]
    gpus = data["gpus"]
    util = (
        ", ".join(f"GPU{g['index']} {g['utilization_percent']}%" for g in gpus["gpus"])
        if gpus["available"]
        else "no GPU inventory"
    )
    cuda = "a CUDA context" if data["app"]["any_cuda_context"] else "NO CUDA context"
    return (
        f"incident {incident.kind}: {incident.line[:200]} | app has {cuda}; {util}; "
        f"task {rate if rate is not None else '?'} frames/s | snapshot {path}"
    )
