"""Output for people; `--json` renders the same result object's `as_dict()`."""

from __future__ import annotations

import json
from typing import Any

from launcher.fleet import FleetCheck
from launcher.preflight import CheckResult
from launcher.probe import excerpt

# Settings that decide the check; the others are shown when they are not at their default (all in --json).
_CHECK_SETTINGS = (
    "HEYGEM_CONDA_ROOT",
    "HEYGEM_CONDA_ENV",
    "HEYGEM_APP_DIR",
    "HEYGEM_APP_COMMAND",
    "HEYGEM_REQUIRE_PROVIDER",
    "HEYGEM_EXTRA_LIBRARY_PATH",
    "HEYGEM_PREFLIGHT_TIMEOUT",
    "HEYGEM_ENV_FILE",
)
# Variables a person needs to see to understand the app's environment; the rest is in --json.
_SHOWN_ENV = (
    "PATH",
    "LD_LIBRARY_PATH",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "CONDA_SHLVL",
    "VIRTUAL_ENV",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
)


def _missing(row: dict[str, Any]) -> str:
    if not row["optional"]:
        return "MISSING"
    return "MISSING (libcudnn opens it when a Conv runs)" if row["kind"] == "cudnn" else "MISSING (FFT ops only)"


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_check(result: CheckResult) -> str:
    data = result.as_dict()
    lines: list[str] = []
    add = lines.append

    add("Settings")
    for key, value in data["settings"].items():
        source = result.settings.sources.get(key, "")
        if key not in _CHECK_SETTINGS and source in ("", "default"):
            continue
        add(f"  {key:<27} {value or '(empty)'}" + (f"   [{source}]" if source and source != "default" else ""))

    conda = data["conda_env"]
    add("")
    add(f"App environment ({'conda env' if conda['is_conda'] else 'python prefix'} {conda['name']}: {conda['prefix']})")
    env = data["environment"]
    for key in _SHOWN_ENV:
        if key in env:
            add(f"  {key}={env[key]}")
    app_keys = [k for k in result.settings.app_env if k in env]
    if app_keys:
        add(f"  from {result.settings.env_file}: " + ", ".join(f"{k}={env[k]}" for k in app_keys))

    ort = data["onnxruntime"]
    add("")
    if ort is None:
        add(f"ONNX Runtime: not found in {conda['prefix']}")
    else:
        add(f"ONNX Runtime: {ort['identity']} at {ort['path']}")
    if data["libraries"]:
        add("  library                    needed    resolves to")
        for row in data["libraries"]:
            path = row["path"] or _missing(row)
            add(f"  {row['name']:<26} {row['how']:<9} {path}")

    gpus = data["gpus"]
    add("")
    if gpus["available"]:
        add(f"GPUs: driver {gpus['driver_version']}, supports CUDA {gpus['cuda_driver_version']}")
        for g in gpus["gpus"]:
            add(
                f"  [{g['index']}] {g['name']}  {g['memory_used_mib']}/{g['memory_total_mib']} MiB  "
                f"util {g['utilization_percent']}%"
            )
        if not gpus["gpus"]:
            add("  none visible")
    else:
        add(f"GPUs: none ({gpus['reason']})")

    probe = data["probe"]
    report = probe["report"]
    add("")
    if report.get("skipped"):
        add("Probe: SKIPPED (HEYGEM_PREFLIGHT=skip)")
        add("")
        add(f"OK?: {data['message']}")
        return "\n".join(lines)
    state = "timed out" if probe["timed_out"] else f"exit {probe['returncode']}"
    add(
        f"Probe ({result.settings.require_provider}, {report.get('python', '?')} at "
        f"{report.get('executable', conda['python'])}): {state} after {probe['elapsed_s']:.2f} s, "
        f"reached stage {report.get('stage', 'none')}"
    )
    if report.get("session_providers"):
        add(f"  session providers: {report['session_providers']}")
    if report.get("node_providers"):
        add("  nodes ran on: " + ", ".join(f"{k}={v}" for k, v in report["node_providers"].items()))
    for message in probe["ort_messages"][:6]:
        add(f"  | {excerpt(message)}")

    if data["warnings"]:
        add("")
        add("Warnings")
        for warning in data["warnings"]:
            add(f"  ! {warning}")

    add("")
    if result.ok:
        add(f"OK: {data['message']}")
    else:
        add(f"REFUSED [{data['cause']}]: {data['message']}")
        add(f"  fix: {data['fix']}")
    return "\n".join(lines)


def render_fleet(fleet: FleetCheck) -> str:
    """One app: its report, as always. Several: the first refusal's report in full (or the first app's),
    then one line per GPU and the fleet's verdict under HEYGEM_GPU_POLICY."""
    text = render_check(fleet.primary)
    if fleet.single:
        return text
    primary = next(m for m in fleet.members if m.check is fleet.primary).instance
    lines = [
        f"The report of {primary.program} ({primary.gpu_label}) in full; every GPU's line follows it.",
        "",
        text,
        "",
        f"Per GPU (HEYGEM_GPUS={fleet.settings.gpus}, HEYGEM_GPU_POLICY={fleet.settings.gpu_policy})",
    ]
    for member in fleet.members:
        instance, verdict = member.instance, member.check.verdict
        same = verdict.message == fleet.primary.verdict.message
        why = "as above" if same else excerpt(verdict.message)
        passed = "skipped (HEYGEM_PREFLIGHT=skip)" if member.check.probe.report.get("skipped") else "passed"
        shown = passed if member.check.ok else f"REFUSED [{verdict.cause}]: {why}"
        lines.append(
            f"  {instance.program:<7} {instance.gpu_label:<30} CUDA_VISIBLE_DEVICES={instance.cuda_visible_devices} "
            f"port {instance.port}: {shown}"
        )
    verdict = fleet.verdict
    lines.append("")
    ok = "OK?" if fleet.skipped else "OK"
    lines.append(f"{ok}: {verdict.message}" if fleet.ok else f"REFUSED [{verdict.cause}]: {verdict.message}")
    if not fleet.ok:
        lines.append(f"  fix: {verdict.fix}")
    for note in verdict.notes if fleet.ok else ():
        lines.append(f"  ! {note}")
    return "\n".join(lines)
