"""Output for people; `--json` renders the same result object's `as_dict()`."""

from __future__ import annotations

import json

from launcher.preflight.check import CheckResult
from launcher.preflight.fleet import FleetCheck
from launcher.preflight.gpuhealth import assess
from launcher.preflight.probe import excerpt
from launcher.system.gpu import Inventory

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms beside the probe
if TYPE_CHECKING:
    from typing import Any

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
    if row.get("dangling"):
        return f"MISSING (a dangling link: {row['dangling']})"
    if not row["optional"]:
        return "MISSING"
    return "MISSING (libcudnn opens it when a Conv runs)" if row["kind"] == "cudnn" else "MISSING (FFT ops only)"


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_check(result: CheckResult) -> str:
    data = result.as_dict()
    lines = _settings_lines(result, data) + _environment_lines(result, data) + _onnxruntime_lines(result, data)
    lines += gpu_lines(result.gpus, result.settings.gpu_memory_min_mib)
    if data["probe"]["report"].get("skipped"):
        return "\n".join([*lines, "", "Probe: SKIPPED (HEYGEM_PREFLIGHT=skip)", "", f"OK?: {data['message']}"])
    lines += _probe_lines(result, data)
    if data["warnings"]:
        lines += ["", "Warnings", *(f"  ! {warning}" for warning in data["warnings"])]
    lines.append("")
    if result.ok:
        lines.append(f"OK: {data['message']}")
    else:
        lines += [f"REFUSED [{data['cause']}]: {data['message']}", f"  fix: {data['fix']}"]
    return "\n".join(lines)


def _settings_lines(result: CheckResult, data: dict[str, Any]) -> list[str]:
    lines = ["Settings"]
    for key, value in data["settings"].items():
        source = result.settings.sources.get(key, "")
        if key not in _CHECK_SETTINGS and source in ("", "default"):
            continue
        shown = f"  {key:<27} {value or '(empty)'}"
        lines.append(shown + (f"   [{source}]" if source and source != "default" else ""))
    return lines


def _environment_lines(result: CheckResult, data: dict[str, Any]) -> list[str]:
    conda, env = data["conda_env"], data["environment"]
    kind = "conda env" if conda["is_conda"] else "python prefix"
    lines = ["", f"App environment ({kind} {conda['name']}: {conda['prefix']})"]
    lines += [f"  {key}={env[key]}" for key in _SHOWN_ENV if key in env]
    app_keys = [k for k in result.settings.app_env if k in env]
    if app_keys:
        lines.append(f"  from {result.settings.env_file}: " + ", ".join(f"{k}={env[k]}" for k in app_keys))
    return lines


def _onnxruntime_lines(result: CheckResult, data: dict[str, Any]) -> list[str]:
    ort = data["onnxruntime"]
    if ort is None:
        return ["", f"ONNX Runtime: not found in {data['conda_env']['prefix']}"]
    lines = ["", f"ONNX Runtime: {ort['identity']} at {ort['path']}"]
    if not data["libraries_apply"]:
        # The CPU provider loads none of them: a table of MISSING rows above an OK would only alarm.
        lines.append(
            f"  CUDA libraries: not needed with HEYGEM_REQUIRE_PROVIDER={result.settings.require_provider} "
            "(listed in --json)"
        )
    elif data["libraries"]:
        lines.append("  library                    needed    resolves to")
        for row in data["libraries"]:
            lines.append(f"  {row['name']:<26} {row['how']:<9} {row['path'] or _missing(row)}")
    return lines


def gpu_lines(inventory: Inventory, memory_min_mib: int | None) -> list[str]:
    """The GPU table, each GPU's health findings under it (one line each: `!!` refuses, `!` warns)."""
    if not inventory.available:
        return ["", f"GPUs: none ({inventory.reason})"]
    lines = ["", f"GPUs: driver {inventory.driver_version}, supports CUDA {inventory.cuda_driver_version}"]
    for g in inventory.gpus:
        lines.append(
            f"  [{g.index}] {g.name}  {g.memory_used_mib}/{g.memory_total_mib} MiB  util {g.utilization_percent}%"
        )
        lines += [f"      {'!!' if f.refuse else '!'} {f.condition}: {f.message}" for f in assess(g, memory_min_mib)]
    if not inventory.gpus:
        lines.append("  none visible")
    return lines


def _probe_lines(result: CheckResult, data: dict[str, Any]) -> list[str]:
    probe = data["probe"]
    report = probe["report"]
    state = "timed out" if probe["timed_out"] else f"exit {probe['returncode']}"
    lines = [
        "",
        f"Probe ({result.settings.require_provider}, {report.get('python', '?')} at "
        f"{report.get('executable', data['conda_env']['python'])}): {state} after {probe['elapsed_s']:.2f} s, "
        f"reached stage {report.get('stage', 'none')}",
    ]
    if report.get("session_providers"):
        lines.append(f"  session providers: {report['session_providers']}")
    if report.get("node_providers"):
        lines.append("  nodes ran on: " + ", ".join(f"{k}={v}" for k, v in report["node_providers"].items()))
    notes = {note["message"]: note["note"] for note in probe["ort_notes"]}
    for message in probe["ort_messages"][:6]:
        lines.append(f"  | {excerpt(message)}")
        if message in notes:
            # Not ORT's text, so not behind its "| " mark: what its words mean here.
            lines.append(f"    ^ {notes[message]}")
    return lines


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
