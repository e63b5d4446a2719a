"""`heygem-launch doctor`: the incident write-up's four manual steps in one command, and a conclusion.

1. the GPU table (nvidia-smi's utilisation and memory) -> NVML;
2. the service process's environment (`ps e -p PID | grep LD_LIBRARY_PATH`) -> /proc/PID/environ;
3. `check_env/check_onnx_cuda.py` -> a fresh preflight, which unlike that script can fail;
4. `tail -200 log/dh.log | grep -E '队列|阻塞|ERROR|GPU'` -> HeyGem's own WARNING/ERROR records and its
   blocked and failure lines, since the app's current start only (the repo ships a log with old failures),
   plus ONNX Runtime's fallback lines from the app's output; not every line that mentions a queue or a GPU.
It works with and without a running service: without one, an app started by hand is looked for by its
working directory and command line.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.commands.probes import preflight_result
from launcher.commands.status import status
from launcher.config.masking import mask_env
from launcher.config.settings import Settings
from launcher.preflight.fleet import FleetCheck, fleet_preflight
from launcher.preflight.gpuhealth import assess
from launcher.preflight.report import gpu_lines
from launcher.system import gpu, procs
from launcher.system.rundir import RunDir
from launcher.watch.dialects import Dialect, tables
from launcher.watch.heygem_log import B, Record, ort_line_time, parse_record, split_code, strip_colour
from launcher.watch.sessions import Session, cpu_fallback

LOG_TAIL = 2000  # records read back from the end of the log
LOG_SHOWN = 15
SHOWN_ENV = (
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "PATH",
    "ORT_CUDA_UNAVAILABLE",
)
PROVIDER_LIB = "libonnxruntime_providers_cuda.so"


@dataclass
class Doctor:
    gpus: gpu.Inventory
    check: FleetCheck
    service: dict[str, Any]
    app_pid: int | None
    app_env: dict[str, str]
    app_gpu: list[procs.GpuUse]
    app_ort: list[procs.OrtUse]
    log: dict[str, Any]
    memory_min_mib: int | None = None  # HEYGEM_GPU_MEMORY_MIN, for the health findings
    conclusion: str = ""
    problem: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "conclusion": self.conclusion,
            "gpus": self.gpus.as_dict(),
            # Every GPU's health, as the preflight's table finds it (the fresh preflight refuses on its app's GPU).
            "gpu_health": [f.as_dict() for g in self.gpus.gpus for f in assess(g, self.memory_min_mib)],
            "service": self.service,
            "app": {
                "pid": self.app_pid,
                "environment": mask_env(self.app_env),
                "processes": [
                    {
                        "pid": u.pid,
                        "cuda_context": u.cuda_context,
                        "libraries": list(u.libraries),
                        "nvidia_devices": list(u.devices),
                    }
                    for u in self.app_gpu
                ],
                "onnxruntime_on_cpu": self.ort_on_cpu,
                "onnxruntime_loaded": any(u.onnxruntime for u in self.app_ort),
                "cuda_context": self.cuda_context,
            },
            "preflight": {**self.check.verdict.summary(), "fix": self.check.verdict.fix or None},
            "log": self.log,
        }

    @property
    def ort_on_cpu(self) -> list[int]:
        """The app's processes that loaded ONNX Runtime without its CUDA provider."""
        return [u.pid for u in self.app_ort if u.on_cpu]

    @property
    def cuda_context(self) -> bool:
        return any(use.cuda_context for use in self.app_gpu)


def _service(settings: Settings) -> tuple[dict[str, Any], int | None]:
    """What `heygem-launch status` says, and the app's pid when it runs under heygem-launch."""
    result = status(settings)
    if result.launcher_pid is None:
        return {"running": False, "reason": f"no heygem-launch runs with run dir {settings.run_dir}"}, None
    if not result.running:
        return {"running": True, "launcher_pid": result.launcher_pid, "reason": result.error}, None
    # The app looked at in depth: the first that runs (with HEYGEM_GPU_POLICY=any the first may be given up).
    app = next((p for p in result.programs if p["pid"]), result.programs[0])
    service = {
        "running": True,
        "launcher_pid": result.launcher_pid,
        "app_state": app["state"],
        "uptime_s": app["uptime_s"],
        "restarts": app["restarts"],
        "last_incident": result.state.get("last_incident"),
        # ONNX Runtime's own word on each session the apps' processes created (the session audit).
        "sessions": result.sessions,
        # The preflight the service started the app with (skipped, with HEYGEM_PREFLIGHT=skip), not the fresh one.
        "preflight": result.state.get("preflight"),
        # Every app (one per GPU with HEYGEM_GPUS); the process checks below look at all of their groups.
        "apps": [
            {
                k: p.get(k)
                for k in (
                    "name",
                    "state",
                    "pid",
                    "gpu",
                    "cuda_visible_devices",
                    "port",
                    "ready",
                    "restarts",
                    "given_up",
                )
            }
            for p in result.programs
        ],
    }
    return service, app["pid"]


def _app_by_hand(settings: Settings) -> int | None:
    """An app started without heygem-launch: a process in the app dir running the app's command."""
    wanted = list(settings.app_command[1:]) or list(settings.app_command)
    for proc in procs.all_procs():
        try:
            if os.readlink(f"/proc/{proc.pid}/cwd") != str(settings.app_dir):
                continue
            with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
                argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue
        if argv[-len(wanted) :] == wanted and proc.pid != os.getpid():
            return proc.pid
    return None


def scan_log(
    settings: Settings,
    since: float | None,
    output: Path | Sequence[tuple[Path, float | None]] | None,
    tz: str | None = None,
) -> dict[str, Any]:
    """HeyGem's own WARNING/ERROR records since `since` (the app's start, epoch seconds; None: the whole
    tail), counted by what they are, and ONNX Runtime's fallback lines in the apps' captured output since
    each app's start (`output`: one file, read since `since`, or (file, since) per app with HEYGEM_GPUS).
    `tz`: the app's TZ, in which it stamps its records."""
    outputs = [(output, since)] if isinstance(output, Path) else list(output or [])
    path = settings.app_log
    found: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "since": since, "counts": {}, "lines": []}
    counts: Counter[str] = Counter()
    lines: list[str] = []
    dialects = tables(settings)
    for line in _tail(path):
        record = parse_record(line, tz)
        if record is None or (since is not None and record.at + (0 if record.precise else 1) < since):
            continue
        if kind := _classify(dialects[record.dialect], record):
            counts[kind] += 1
            lines.append(line)
    # The output file outlives the app's restarts: a line without a time of its own (a print) takes the time
    # of the record or ONNX Runtime line before it.
    for path_of_output, started in outputs:
        stamped: float | None = None
        for line in _tail(path_of_output):
            record = parse_record(line, tz)
            at = record.at + (0 if record.precise else 1) if record else ort_line_time(line, tz)
            stamped = at if at is not None else stamped
            recent = started is None or (stamped is not None and stamped >= started)
            if record is None and recent and settings.pattern_fallback.search(strip_colour(line)):
                counts["onnxruntime_fallback"] += 1
                lines.append(line)
            # HeyGem.ai's image (dialect B) writes its records only to its output, never to a file.
            elif record is not None and record.dialect == B and recent and (kind := _classify(dialects[B], record)):
                counts[kind] += 1
                lines.append(line)
    found["counts"] = dict(counts)
    found["lines"] = lines[-LOG_SHOWN:]
    return found


def _classify(d: Dialect, record: Record) -> str | None:
    """What one of HeyGem's own records is, in its dialect's words; None for its INFO lines."""
    message = split_code(record.message, dialect=record.dialect)[1]
    if record.level == "ERROR" and d.blocked.search(message):
        return "blocked"
    if record.level == "ERROR" and d.wedged.search(message):
        return "heygem_timeout"
    if record.level == "ERROR" and d.failure.search(message):
        return "task_failed"
    if record.level == "WARNING" and d.self_heal.search(message):
        return "worker_restart"
    return record.level.lower() if record.level in ("WARNING", "ERROR", "CRITICAL") else None


def _tail(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 512 * 1024))
            return handle.read().decode("utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    except OSError:
        return []


def conclude(d: Doctor, settings: Settings) -> tuple[bool, str]:
    """The most likely cause, from what was found, most decisive first."""
    on_cuda = settings.require_provider != "CPUExecutionProvider"
    blocked = d.log.get("counts", {}).get("blocked", 0)
    # The watch's own rule (a session the app asked to run on the CPU is its choice, not a fallback).
    sessions = [Session.from_dict(s) for s in d.service.get("sessions", [])]
    fallbacks = [e for e in (cpu_fallback(s, settings.require_provider) for s in sessions) if e is not None]
    if d.app_pid and on_cuda and fallbacks:
        return True, (
            f"the running app (pid {d.app_pid}) runs ONNX Runtime on the CPU, by ONNX Runtime's own word on "
            f"{len(fallbacks)} of its sessions: {'; '.join(fallbacks[:3])}"
        )
    if d.app_pid and on_cuda and (d.ort_on_cpu or d.log.get("counts", {}).get("onnxruntime_fallback")):
        why = (
            f"the app's environment fails the preflight: [{d.check.verdict.cause}] {d.check.verdict.message}"
            if not d.check.ok
            else "a correct environment passes the preflight now, so the app was started "
            "with a different one: restart it under heygem-launch"
        )
        where = (
            f"processes {', '.join(map(str, d.ort_on_cpu))} loaded ONNX Runtime without {PROVIDER_LIB}"
            if d.ort_on_cpu
            else "ONNX Runtime logged its fallback"
        )
        torch = " (a CUDA context is held, by torch: that says nothing about ONNX Runtime)" if d.cuda_context else ""
        return True, f"the running app (pid {d.app_pid}) runs ONNX Runtime on the CPU: {where}{torch}; {why}"
    if not d.check.ok:
        return (
            True,
            f"the preflight refuses [{d.check.verdict.cause}]: {d.check.verdict.message}; fix: {d.check.verdict.fix}",
        )
    gone = [a for a in d.service.get("apps", []) if a.get("given_up")]
    if gone:
        named = "; ".join(f"{a['name']} ({a.get('gpu')}): {a['given_up']}" for a in gone)
        return True, f"{len(gone)} app(s) given up while the others run (HEYGEM_GPU_POLICY=any): {named}"
    if d.check.config_error and not d.app_pid:
        return True, f"the app cannot start as configured: {d.check.config_error}"
    counts = d.log.get("counts", {})
    not_ready = any(a.get("ready") is False for a in d.service.get("apps", []))
    if counts.get("heygem_timeout") or counts.get("worker_restart", 0) > 1:
        return True, (
            "HeyGem gave up on a task after its own timeout, or restarted its workers again and again: its workers "
            "are gone or stuck and every later task hangs the same way; restart the app (heygem-launch does when "
            "it runs it)" + ("; its workers never said they loaded" if not_ready else "")
        )
    if blocked:
        if not d.gpus.available or not d.gpus.gpus:
            why = d.gpus.reason or "NVML lists none"
            return True, f"the queue blocked and no GPU is visible here ({why}): the frames ran on the CPU"
        idle = d.gpus.available and d.gpus.gpus and all(g.utilization_percent == 0 for g in d.gpus.gpus)
        if idle:
            return True, "the queue blocked while the GPU is idle: the work is not reaching the GPU"
        return (
            True,
            "the queue blocked with the GPU in use: processing is slower than the queue allows "
            "(queue size, batch size, or several processes sharing the GPU)",
        )
    return False, "no problem found"


def run_doctor(settings: Settings, environ: dict[str, str]) -> Doctor:
    service, app_pid = _service(settings)
    if app_pid is None and not service.get("running"):  # under the launcher its wrappers are in the app dir
        app_pid = _app_by_hand(settings)
        if app_pid is not None:
            service["app_started_by_hand"] = app_pid
    app_env = procs.environ_of(app_pid) if app_pid else {}
    pids = [a["pid"] for a in service.get("apps", []) if a.get("pid")] or ([app_pid] if app_pid else [])
    groups = {p.pgrp for p in (procs.read_proc(pid) for pid in pids) if p is not None}
    members = [m for group in sorted(groups) for m in procs.group_members(group)]
    uses = [u for u in (procs.gpu_use(p.pid) for p in members) if u is not None]
    ort = [u for u in (procs.ort_use(p.pid) for p in members) if u is not None]
    since = procs.start_time(app_pid) if app_pid else None
    run = RunDir(settings.run_dir)
    outputs = [
        (run.program_log(a["name"]), procs.start_time(a["pid"]) if a.get("pid") else None)
        for a in (service.get("apps") or [])
    ]
    d = Doctor(
        gpu.inventory(),
        fleet_preflight(settings, environ, start=False),
        service,
        app_pid,
        app_env,
        uses,
        ort,
        scan_log(settings, since, outputs, app_env.get("TZ")),
        settings.gpu_memory_min_mib,
    )
    d.problem, d.conclusion = conclude(d, settings)
    return d


def _service_preflight(pre: dict[str, Any]) -> str:
    """The service's own last preflight, apart from the fresh one below: the app may run unchecked."""
    result = preflight_result(pre)
    why = {"skipped": " (HEYGEM_PREFLIGHT=skip): nothing was checked", "refused": f" [{pre.get('cause')}]"}
    return f"  the service's last preflight: {result}{why.get(result, '')} on {pre.get('provider')}"


def _gpu_lines(d: Doctor) -> list[str]:
    """NVML's table and each GPU's health, as the preflight's report shows them (`!!` refuses, `!` warns)."""
    if not d.gpus.available:
        return ["GPUs", f"  none: {d.gpus.reason}"]
    return ["GPUs", *(line.replace("GPUs: ", "  ", 1) for line in gpu_lines(d.gpus, d.memory_min_mib)[1:])]


def _service_lines(d: Doctor) -> list[str]:
    s = d.service
    if not (s.get("running") and "app_state" in s):
        by_hand = f"; an app started by hand runs as pid {d.app_pid}" if s.get("app_started_by_hand") else ""
        return ["Service", f"  {s.get('reason')}{by_hand}"]
    lines = [
        "Service",
        f"  heygem-launch pid {s['launcher_pid']}; app {s['app_state']} pid {d.app_pid}, "
        f"up {s['uptime_s']} s, {s['restarts']} restarts",
    ]
    if s.get("preflight"):
        lines.append(_service_preflight(s["preflight"]))
    for app in s.get("apps", []) if len(s.get("apps", [])) > 1 else []:
        lines.append(
            f"    {app['name']}: {app['state']} pid {app['pid']}, {app['gpu']}, "
            f"CUDA_VISIBLE_DEVICES={app['cuda_visible_devices']}, port {app['port']}, "
            f"ready {'yes' if app['ready'] else 'no'}, {app['restarts']} restarts"
        )
    return lines


def _process_lines(d: Doctor) -> list[str]:
    env = d.as_dict()["app"]["environment"]
    lines = ["The running app's environment" + (f" (/proc/{d.app_pid}/environ)" if d.app_pid else "")]
    lines += [f"  {k}={env[k]}" for k in SHOWN_ENV if k in env] if d.app_pid else ["  no app process found"]
    lines += ["", "ONNX Runtime and CUDA in the app's processes"]
    ort = {u.pid: u for u in d.app_ort}
    for use in d.app_gpu:
        what = ", ".join(use.libraries + use.devices) or "no CUDA library mapped, no NVIDIA device open"
        o = ort.get(use.pid)
        onnx = "" if o is None or not o.onnxruntime else ("ORT on CUDA; " if o.cuda_provider else "ORT ON THE CPU; ")
        lines.append(f"  pid {use.pid}: {onnx}{what}")
    lines = lines if d.app_gpu else [*lines, "  no app process found"]
    sessions = d.service.get("sessions") or []
    lines += ["", "ONNX Runtime sessions (their own word; the lines above from /proc are a sign)"]
    for session in sessions[-20:]:
        got = ", ".join(session.get("providers") or []) or f"none: {session.get('error')}"
        lines.append(f"  {session['model']} (pid {session['pid']}, {session['app']}): {got}")
    return lines if sessions else [*lines, "  none reported (HEYGEM_SESSION_AUDIT=off, or no session yet)"]


def _log_lines(d: Doctor) -> list[str]:
    since = (
        "since the app started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.log["since"]))
        if d.log.get("since")
        else "no app running: the log's tail"
    )
    lines = [f"Log {d.log['path']}: HeyGem's warnings, errors, blocked and failed tasks ({since})"]
    if not d.log["exists"]:
        return [*lines, "  does not exist"]
    lines.append("  " + (", ".join(f"{k} {n}" for k, n in d.log["counts"].items()) or "none"))
    return lines + [f"  | {line[:200]}" for line in d.log["lines"]]


def render(d: Doctor) -> str:
    """The people's diagnosis, section by section, from the same object as `--json`."""
    verdict = d.check.verdict
    fresh = (
        f"  OK: {verdict.message}"
        if d.check.ok
        else f"  REFUSED [{verdict.cause}]: {verdict.message}\n  fix: {verdict.fix}"
    )
    sections = [
        _gpu_lines(d),
        _service_lines(d),
        _process_lines(d),
        ["Fresh preflight", fresh],
        _log_lines(d),
        [f"Conclusion: {d.conclusion}"],
    ]
    return "\n\n".join("\n".join(section) for section in sections)
