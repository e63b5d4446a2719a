"""Pure: from what the preflight found, exactly one verdict.

The probe is the ground truth: a probe that ran every node on the required provider passes, whatever
the library table says. When it did not, causes are taken from evidence, in a fixed order: the probe's
own onnxruntime without the provider; CUDA libraries, then cuDNN, inside the image (naming the driver too
when it is missing); the driver, missing when libcuda.so.1 does not resolve and NVML does not load,
whatever ORT's text says (1.16 says "driver version is insufficient" without any driver); then, with a
driver, CUDA_VISIBLE_DEVICES and the devices; the driver's age. Inside the image before the host, the
order a person must fix them in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher import causes
from launcher.cudapkgs import install_commands
from launcher.gpu import Inventory, visibility
from launcher.ortbuild import DRIVER_LIB, MIN_DRIVER, OrtBuild, RequiredLibrary
from launcher.probe import NO_CPU_FALLBACK, ProbeResult, excerpt

CPU = "CPUExecutionProvider"
_CANNOT_OPEN = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")
# cuDNN names the sub-library it failed to open in its own words (cuDNN 8: "Could not load library
# libcudnn_cnn_infer.so.8. Error: ...", cuDNN 9: "Unable to load libcudnn_cnn.so.9"), not the loader's.
_CUDNN_LOAD = re.compile(r"(?:Could not load library|Unable to load|cannot load)\s+(libcudnn\w*\.so[\d.]*\d)", re.I)
_INSUFFICIENT = "driver version is insufficient"
# ORT blames "the user" for the probe's own session option (launcher/probe.py): say so before its words.
_NO_FALLBACK = "ONNX Runtime would have run nodes on the CPU, which the probe forbids on purpose ({})"
PASSED, REFUSED, SKIPPED = "passed", "refused", "skipped"  # a preflight's `result`


@dataclass(frozen=True)
class LibraryRow(RequiredLibrary):
    """A required library and the file it resolves to in the app's environment (None: missing)."""

    path: str | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool  # the app may start
    cause: str | None
    message: str
    fix: str
    notes: tuple[str, ...] = ()  # what the probe found that a person should know, whatever the cause
    # HEYGEM_PREFLIGHT=skip: `ok` lets the app start, but nothing was checked, so no output may say "passed".
    skipped: bool = False

    @property
    def result(self) -> str:
        """The one word every output uses: passed, refused or skipped."""
        return SKIPPED if self.skipped else PASSED if self.ok else REFUSED

    def summary(self) -> dict[str, Any]:
        """The preflight as documents state it: `result`, and `ok` true or false, or null when nothing was
        checked (a client testing `ok` must not read a skipped preflight as a pass, nor as a refusal)."""
        ok = None if self.skipped else self.ok
        return {"result": self.result, "ok": ok, "cause": self.cause, "message": self.message}


def _first_error(probe: ProbeResult) -> str:
    for line in probe.ort_messages:
        if line.startswith("E: ") or "Failed to" in line or "EP Error" in line:
            return excerpt(line.removeprefix("E: "))
    return excerpt(str(probe.report.get("error") or f"probe exited {probe.returncode}").splitlines()[0])


def _missing_from_output(output: str) -> list[LibraryRow]:
    rows = {
        name: LibraryRow(name, "driver" if name.startswith("libcuda.so") else "toolkit", "NEEDED")
        for name in _CANNOT_OPEN.findall(output)
    }
    for name in _CUDNN_LOAD.findall(output):
        rows[name] = LibraryRow(name, "cudnn", "run time")
    for name, row in list(rows.items()):
        if name.startswith("libcudnn"):
            rows[name] = LibraryRow(name, "cudnn", row.how)
    return list(rows.values())


def _cudnn_when(rows: Sequence[LibraryRow], cudnn_major: int | None) -> str:
    main = [r for r in rows if re.match(r"libcudnn\.so", r.name)]
    if any(r.how == "NEEDED" for r in main):
        return "the CUDA provider library NEEDs it, so the provider does not load at all"
    if main:
        return "ONNX Runtime opens it when a Conv first runs, so the app fails or falls back to CPU there"
    lib = f"libcudnn.so.{cudnn_major}" if cudnn_major else "libcudnn"
    return f"{lib} is found but opens these itself when a Conv first runs"


def _gpu_list(gpus: Inventory) -> str:
    return ", ".join(f"{g.index} {g.uuid} ({g.name})" for g in gpus.gpus) or "none"


def decide(
    required: str,
    build: OrtBuild | None,
    libraries: Sequence[LibraryRow],
    gpus: Inventory,
    env: Mapping[str, str],
    probe: ProbeResult,
    python: str,
) -> Verdict:
    """Pure: the one cause, from evidence, in a fixed order (see the module docstring)."""
    report = probe.report
    notes: list[str] = []

    def verdict(cause_id: str, **details: Any) -> Verdict:
        described = causes.describe(cause_id, **details)
        return Verdict(False, cause_id, described.message, described.fix, tuple(notes))

    available = report.get("available_providers")
    ort_version = report.get("ort_version") or (build.version if build else "?")
    if build is not None and "onnxruntime" in build.distributions and "onnxruntime_gpu" in build.distributions:
        found = f"its providers: {', '.join(available)}" if available else "the probe did not get that far"
        notes.append(
            f"both `onnxruntime` and `onnxruntime-gpu` are installed in one folder; the onnxruntime "
            f"{ort_version} the probe imported decides ({found})"
        )

    if probe.ok:
        return Verdict(
            True,
            None,
            f"the probe ran every node on {required} and matched numpy (max error {report.get('max_error', 0):.2g})",
            "",
            tuple(notes),
        )
    if probe.timed_out:
        return verdict(causes.PROBE_TIMEOUT, timeout=f"{probe.elapsed_s:.0f}")

    stage, error = report.get("stage"), str(report.get("error", ""))
    if stage == "import_onnxruntime" and "No module named 'onnxruntime'" in error:
        return verdict(causes.ONNXRUNTIME_MISSING, python=python)
    if stage in ("start", "import_numpy", "import_onnxruntime") or not report:
        return verdict(causes.PROBE_FAILED, python=python, detail=_first_error(probe))

    cuda_major = build.cuda_major if build else None
    cudnn_major = build.cudnn_major if build else None
    identity = build.identity if build else f"onnxruntime {ort_version}"
    max_error, tolerance = report.get("max_error"), report.get("tolerance")
    if required != CPU:
        # The probe's own onnxruntime is the evidence, not the metadata: the files of the last package
        # installed win, whichever dist-info directories are left.
        if available and required not in available:
            where = report.get("ort_file") or "?"
            pin = (build.gpu_dist_version if build else "") or "<pin>"
            detail = f"onnxruntime {ort_version} at {where} offers only {', '.join(available)}"
            if build is not None and build.cpu_package_installed:
                over = " installed over `onnxruntime-gpu`" if "onnxruntime_gpu" in build.distributions else ""
                detail += f"; the CPU package `onnxruntime`{over} provides it"
            return verdict(causes.ONNXRUNTIME_CPU_ONLY, python=python, detail=detail, pin=pin)

        by_name = {row.name: row for row in libraries}
        later = [r.name for r in libraries if r.path is None and r.optional and r.kind == "cudnn"]
        if later:
            notes.append(
                f"cuDNN's sub-libraries do not resolve: {', '.join(later)}; libcudnn opens them when a Conv runs"
            )
        missing = [row for row in libraries if row.path is None and not row.optional]
        # ORT's (or cuDNN's) own loader error is authoritative where the static table found a file.
        missing += [row for row in _missing_from_output(probe.output) if row.name not in {m.name for m in missing}]
        toolkit = [r.name for r in missing if r.kind == "toolkit"]
        cudnn = [r for r in missing if r.kind == "cudnn"]
        driver_row = by_name.get(DRIVER_LIB)
        driver_lib_missing = any(r.kind == "driver" for r in missing) or (
            driver_row is not None and driver_row.path is None
        )
        driver_absent = driver_lib_missing and not gpus.available
        driver_present = gpus.available or (driver_row is not None and driver_row.path is not None)
        step = {"driver_step": "", "driver_fix": ""}
        if driver_absent:
            step = {
                "driver_step": f"; the NVIDIA driver ({DRIVER_LIB}) is missing too",
                "driver_fix": "; then start the container with the NVIDIA runtime (`docker run --gpus all`)",
            }
        generic = "NVIDIA's CUDA wheels or conda's CUDA packages for the build's CUDA major"
        if toolkit:
            names = toolkit + [r.name for r in cudnn]
            return verdict(
                causes.CUDA_LIBRARIES_MISSING,
                build=identity,
                missing=", ".join(names),
                packages=install_commands(names, cuda_major, cudnn_major, python) or generic,
                **step,
            )
        if cudnn:
            names = [r.name for r in cudnn]
            return verdict(
                causes.CUDNN_MISSING,
                build=identity,
                cudnn_major=cudnn_major or "?",
                missing=", ".join(names),
                when=_cudnn_when(cudnn, cudnn_major),
                packages=install_commands(names, cuda_major, cudnn_major, python) or generic,
                **step,
            )
        if driver_absent:
            said = f' (ONNX Runtime says "{_INSUFFICIENT}": that is its text for no driver too)'
            return verdict(
                causes.DRIVER_MISSING, build=identity, ort_said=said if _INSUFFICIENT in probe.output else ""
            )

        if driver_present:
            seen = visibility(env.get("CUDA_VISIBLE_DEVICES"), gpus)
            if seen.hides_all:
                detail = f"CUDA_VISIBLE_DEVICES={seen.asked!r} selects no device"
                if seen.unmatched is not None and gpus.available:
                    detail += f": {seen.unmatched!r} matches none of the GPUs NVML lists ({_gpu_list(gpus)})"
                fix = "unset CUDA_VISIBLE_DEVICES or set it to indices or UUIDs that exist (`nvidia-smi -L`)"
                return verdict(causes.NO_GPU_VISIBLE, detail=detail, visible_fix=fix)
            if seen.unmatched is not None and seen.asked is not None:
                notes.append(
                    f"CUDA_VISIBLE_DEVICES={seen.asked!r}: CUDA ignores {seen.unmatched!r} and every entry after it"
                )
            if gpus.available and not gpus.gpus:
                return verdict(causes.NO_GPU_VISIBLE, detail="NVML lists 0 devices", visible_fix="check `nvidia-smi`")
            if "no CUDA-capable device" in probe.output or "cudaErrorNoDevice" in probe.output:
                return verdict(
                    causes.NO_GPU_VISIBLE, detail="CUDA reports no device", visible_fix="check `nvidia-smi -L`"
                )
            driver_major = gpus.cuda_driver_major
            if (driver_major is not None and cuda_major is not None and driver_major < cuda_major) or (
                _INSUFFICIENT in probe.output
            ):
                return verdict(
                    causes.DRIVER_TOO_OLD,
                    build=identity,
                    driver_version=gpus.driver_version or "(version unknown)",
                    driver_cuda=gpus.cuda_driver_version or "?",
                    driver_major=driver_major if driver_major is not None else "your driver",
                    cuda_major=cuda_major if cuda_major is not None else "?",
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
    if stage == "create_session" and NO_CPU_FALLBACK in error:
        return verdict(causes.PROVIDER_NOT_USED, required=required, detail=_NO_FALLBACK.format(_first_error(probe)))
    return verdict(causes.PROBE_FAILED, python=python, detail=_first_error(probe))
