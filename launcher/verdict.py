"""Pure: from what the preflight found, exactly one verdict.

The probe is the ground truth: a probe that ran every node on the required provider passes, whatever
the library table says. When it did not, the most specific cause that explains the failure is chosen,
libraries inside the image before what the host provides (driver, GPU), since that is the order a
person must fix them in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher import causes
from launcher.gpu import Inventory
from launcher.ortbuild import MIN_DRIVER, OrtBuild, RequiredLibrary, wheel_for
from launcher.probe import ProbeResult

CPU = "CPUExecutionProvider"
_CANNOT_OPEN = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")


@dataclass(frozen=True)
class LibraryRow(RequiredLibrary):
    """A required library and the file it resolves to in the app's environment (None: missing)."""

    path: str | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    cause: str | None
    message: str
    fix: str


def _wheels(names: Sequence[str], cuda_major: int | None) -> str:
    wheels = sorted({w for w in (wheel_for(n, cuda_major) for n in names) if w})
    return " ".join(wheels) if wheels else "the CUDA toolkit's libraries"


def _first_error(probe: ProbeResult) -> str:
    for line in probe.ort_messages:
        if line.startswith("E: ") or "Failed to" in line or "EP Error" in line:
            return line.removeprefix("E: ")[:300]
    return str(probe.report.get("error") or f"probe exited {probe.returncode}").splitlines()[0][:300]


def decide(
    required: str,
    build: OrtBuild | None,
    libraries: Sequence[LibraryRow],
    gpus: Inventory,
    env: Mapping[str, str],
    probe: ProbeResult,
    python: str,
) -> Verdict:
    def verdict(cause_id: str, **details: Any) -> Verdict:
        described = causes.describe(cause_id, **details)
        return Verdict(False, cause_id, described.message, described.fix)

    report = probe.report
    if probe.ok:
        return Verdict(
            True,
            None,
            f"the probe ran every node on {required} and matched numpy (max error {report.get('max_error', 0):.2g})",
            "",
        )
    if probe.timed_out:
        return verdict(causes.PROBE_TIMEOUT, timeout=f"{probe.elapsed_s:.0f}")

    stage, error = report.get("stage"), str(report.get("error", ""))
    if stage == "import_onnxruntime" and "No module named 'onnxruntime'" in error:
        return verdict(causes.ONNXRUNTIME_MISSING, python=python)
    if stage in ("start", "import_numpy", "import_onnxruntime") or not report:
        return verdict(causes.PROBE_FAILED, python=python, detail=_first_error(probe))

    ort_version = report.get("ort_version") or (build.version if build else "?")
    cuda_version = report.get("cuda_version") or (build.cuda_version if build else "") or "?"
    cuda_major = build.cuda_major if build else None
    max_error, tolerance = report.get("max_error"), report.get("tolerance")
    if required != CPU:
        available = report.get("available_providers") or []
        if (
            (build is not None and build.cpu_package_installed)
            or report.get("package_name") == "onnxruntime"
            or (available and required not in available)
        ):
            detail = "onnxruntime " + (
                "installed over onnxruntime-gpu"
                if build and "onnxruntime_gpu" in build.distributions
                else str(ort_version)
            )
            return verdict(causes.ONNXRUNTIME_CPU_ONLY, python=python, detail=detail)

        missing = [row for row in libraries if row.path is None and not row.optional]
        # ORT's own loader error is authoritative when the static table found the file but the loader did not.
        named = {m for m in _CANNOT_OPEN.findall(probe.output)} - {row.name for row in missing}
        missing += [
            LibraryRow(name, "driver" if name.startswith("libcuda.so") else "toolkit", "NEEDED")
            for name in sorted(named)
        ]
        toolkit = [r.name for r in missing if r.kind == "toolkit"]
        cudnn = [r.name for r in missing if r.kind == "cudnn"]
        driver = [r.name for r in missing if r.kind == "driver"]
        if toolkit:
            # One cause, but a person should not learn of the next problem only after fixing this one.
            also = f" (and the driver's {', '.join(driver)}: start the container with --gpus)" if driver else ""
            return verdict(
                causes.CUDA_LIBRARIES_MISSING,
                ort_version=ort_version,
                cuda_version=cuda_version,
                missing=", ".join(toolkit + cudnn) + also,
                wheels=_wheels(toolkit + cudnn, cuda_major),
            )
        if cudnn:
            return verdict(
                causes.CUDNN_MISSING,
                missing=", ".join(cudnn),
                cuda_version=cuda_version,
                wheels=_wheels(cudnn, cuda_major),
            )
        if driver:
            return verdict(causes.DRIVER_MISSING)

        visible = env.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            return verdict(causes.NO_GPU_VISIBLE, detail=f"CUDA_VISIBLE_DEVICES={visible!r}")
        if gpus.available and not gpus.gpus:
            return verdict(causes.NO_GPU_VISIBLE, detail="NVML reports 0 devices")
        if "no CUDA-capable device" in probe.output or "cudaErrorNoDevice" in probe.output:
            return verdict(causes.NO_GPU_VISIBLE, detail="CUDA reports no device")
        driver_major = gpus.cuda_driver_major
        if (
            driver_major is not None and cuda_major is not None and driver_major < cuda_major
        ) or "driver version is insufficient" in probe.output:
            return verdict(
                causes.DRIVER_TOO_OLD,
                driver_cuda=gpus.cuda_driver_version or "?",
                ort_version=ort_version,
                cuda_version=cuda_version,
                min_driver=MIN_DRIVER.get(cuda_major or 0, "the version NVIDIA lists"),
            )

    if max_error is not None and tolerance is not None and max_error > tolerance:
        providers = report.get("session_providers") or [required]
        return verdict(causes.WRONG_RESULT, provider=providers[0], max_error=f"{max_error:.3g}")
    nodes = report.get("node_providers") or {}
    off = {op: p for op, p in nodes.items() if p != required}
    if off:
        detail = ", ".join(f"{op} ran on {p}" for op, p in sorted(off.items()))
        return verdict(causes.PROVIDER_NOT_USED, required=required, detail=detail)
    providers = report.get("session_providers")
    if providers and providers[0] != required:
        return verdict(causes.PROVIDER_NOT_USED, required=required, detail=f"the session chose {providers}")
    if stage == "create_session" and "fallback to CPU EP has been explicitly disabled" in error:
        return verdict(causes.PROVIDER_NOT_USED, required=required, detail=_first_error(probe))
    return verdict(causes.PROBE_FAILED, python=python, detail=_first_error(probe))
