"""Pure: the run dir's state and settings documents, which `status`, the probes, `doctor` and `restart` read
(they never read the .env file, which may be mid-edit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.config.settings import Settings
from launcher.preflight.fleet import FleetCheck, MemberCheck
from launcher.service.appruntime import AppRuntime


def state_document(
    apps: list[AppRuntime],
    fleet: FleetCheck,
    last_check: FleetCheck,
    *,
    launcher_pid: int,
    started_at: float,
    generation: int,
    restarting: bool,
    ready: bool,
) -> dict[str, Any]:
    """`state.json`: the first app's fields at the top level, as with one app (what older clients read);
    every app under `instances`, the ones whose GPU was refused (HEYGEM_GPU_POLICY=any) included; the last
    preflight, even a refused restart's (`last_check`). Times in seconds since the epoch."""
    first = apps[0].state() if apps else {}
    incidents = [rt.watch.open_incident for rt in apps if rt.watch.open_incident]
    verdict = last_check.verdict
    return {
        **{k: first.get(k) for k in ("ready_at", "missing_markers", "last_incident", "tasks")},
        "launcher_pid": launcher_pid,
        "started_at": started_at,
        "generation": generation,
        "restarts": sum(len(rt.restarts) for rt in apps),
        "restart_times": sorted(t for rt in apps for t in rt.restarts.times),
        "restarting": restarting,
        "last_exit": first.get("last_exit", ""),
        "wrapper_pid": first.get("wrapper_pid"),
        "app_port": apps[0].port if apps else fleet.primary.app.port,
        "app_started": any(rt.app_started for rt in apps),
        "ready": ready,
        "incident": incidents[0] if incidents else None,
        "gpu_policy": None if fleet.single else fleet.settings.gpu_policy,
        "instances": [rt.state() for rt in apps] + [refused_state(m) for m in fleet.failing],
        "preflight": {
            **verdict.summary(),
            "checked_at": last_check.checked_at,
            "provider": last_check.settings.require_provider,
        },
    }


def refused_state(member: MemberCheck) -> dict[str, Any]:
    """An app whose GPU did not pass (HEYGEM_GPU_POLICY=any): never started."""
    verdict = member.check.verdict
    return {
        **member.as_dict(),
        "wrapper_pid": None,
        "app_started": False,
        "ready": False,
        "given_up": f"preflight refused [{verdict.cause}]",
        "preflight": verdict.summary(),
    }


def settings_document(settings: Settings, generation: int, raw: dict[str, str]) -> dict[str, Any]:
    """`settings.json` (0600: the app's .env keys may be secrets): the running generation's settings."""
    s = settings
    return {
        "generation": generation,
        "raw": raw,
        "app_env": dict(s.app_env),
        "env_file": str(s.env_file) if s.env_file else None,
        "restart_timeout": s.restart_timeout,
        "preflight_timeout": s.preflight_timeout,
        "stop_grace": s.stop_grace,
    }


def absolute_raw(settings: Settings, run_path: Path, conda_prefix: Path) -> dict[str, str]:
    """The settings as given, with what was relative to the service's working directory made absolute: a
    client rebuilds them from anywhere."""
    s = settings
    raw = {**s.raw, "HEYGEM_APP_DIR": str(s.app_dir), "HEYGEM_APP_LOG": str(s.app_log)}
    raw["HEYGEM_RUN_DIR"] = str(run_path)
    if "/" in s.conda_env:
        raw["HEYGEM_CONDA_ENV"] = str(conda_prefix)
    return raw
