"""A diagnosis snapshot per incident: one JSON file in the run dir, written before the cure is applied.

Bounded: each line in it is cut (the watchdog keeps at most SNAPSHOT_LINE characters of the last 50), so a
file stays well under 1 MB whatever the app writes, and only the newest KEEP snapshots are kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from launcher.system import gpu, procs
from launcher.system.rundir import RunDir, write_json
from launcher.watch.watchdog import Incident, Watchdog

KEEP = 50


def snapshot(incident: Incident, watchdog: Watchdog, group: int | None, app_pid: int | None) -> dict[str, Any]:
    """The trigger, the GPU, what the app's processes really have loaded, the last lines, the task's rate."""
    members = procs.group_members(group) if group else []
    environ = procs.environ_of(app_pid) if app_pid else {}
    inventory = gpu.inventory()
    processes = []
    for member in members:
        use, ort = procs.gpu_use(member.pid), procs.ort_use(member.pid)
        if use is None or ort is None:
            continue  # gone meanwhile
        processes.append(
            {
                "pid": member.pid,
                "command": procs.command_line(member.pid)[:200],
                "onnxruntime": ort.onnxruntime,
                "onnxruntime_cuda_provider": ort.cuda_provider,
                "cuda_context": use.cuda_context,
                "libraries": list(use.libraries),
                "nvidia_devices": list(use.devices),
            }
        )
    task = watchdog.task(incident.code)
    return {
        "kind": incident.kind,
        "action": incident.action,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(incident.at)),
        "trigger": incident.line,
        "gpus": inventory.as_dict(),
        "app": {
            "pid": app_pid,
            "process_group": group,
            "ld_library_path": environ.get("LD_LIBRARY_PATH"),
            "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
            "processes": processes,
            "onnxruntime_on_cpu": [
                p["pid"] for p in processes if p["onnxruntime"] and not p["onnxruntime_cuda_provider"]
            ],
        },
        "task": task.as_dict() if task is not None else None,
        "last_lines": list(watchdog.lines),
    }


def write(run: RunDir, incident: Incident, data: dict[str, Any], program: str = "app") -> Path:
    """The snapshot's file (named by time, the app's program when there are several, and the kind)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(incident.at)) + f"{incident.at % 1:.3f}"[1:]
    which = "" if program == "app" else f"{program}-"
    path = run.path / f"incident-{stamp}-{which}{incident.kind}.json"
    # Incidents found in one read share its time: each keeps its own file, in the order found.
    n = 0
    while path.exists():
        n += 1
        path = run.path / f"incident-{stamp}.{n}-{which}{incident.kind}.json"
    write_json(path, data)
    for old in sorted(run.path.glob("incident-*.json"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def summary(incident: Incident, data: dict[str, Any], path: Path) -> str:
    """The one log line for an incident."""
    gpus = data["gpus"]
    util = (
        ", ".join(f"GPU{g['index']} {g['utilization_percent']}%" for g in gpus["gpus"])
        if gpus["available"]
        else "no GPU inventory"
    )
    on_cpu = data["app"]["onnxruntime_on_cpu"]
    ort = (
        f"ONNX Runtime WITHOUT its CUDA provider in pid {', '.join(map(str, on_cpu))}"
        if on_cpu
        else "no ORT on CPU seen"
    )
    task = data["task"]
    rate = (
        f"task {task['code']}: {task['frames']} frames, {task['fps'] if task['fps'] is not None else '?'} frames/s"
        if task
        else "no task"
    )
    return (
        f"incident {incident.kind} ({incident.action}): {incident.line[:200]} | {ort}; {util}; {rate} | snapshot {path}"
    )
