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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from launcher.preflight import causes
from launcher.preflight.cudapkgs import install_commands
from launcher.preflight.gpuhealth import Finding, assess
from launcher.preflight.ortbuild import DRIVER_LIB, MIN_DRIVER, OrtBuild, RequiredLibrary
from launcher.preflight.probe import NO_CPU_FALLBACK, ProbeResult, excerpt
from launcher.system.gpu import Gpu, Inventory, visibility

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms beside the probe
if TYPE_CHECKING:
    from typing import Any

CPU = "CPUExecutionProvider"
_CANNOT_OPEN = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")
# cuDNN names the sub-library it failed to open in its own words (cuDNN 8: "Could not load library
# libcudnn_cnn_infer.so.8. Error: ...", cuDNN 9: "Unable to load libcudnn_cnn.so.9"), not the loader's.
_CUDNN_LOAD = re.compile(r"(?:Could not load library|Unable to load|cannot load)\s+(libcudnn\w*\.so[\d.]*\d)", re.I)
_INSUFFICIENT = "driver version is insufficient"
# The loader's words for a library that resolved but is another release: a symbol, or a whole version node, missing
# ("...providers_cuda.so: undefined symbol: cublasLtCreate, version libcublasLt.so.11"; "/x/libcublasLt.so.11:
# version `libcublasLt.so.11' not found (required by ...)"; glibc's dl-lookup.c and dl-version.c).
_UNDEFINED = re.compile(r"undefined symbol: ([\w@.]+)(?:, version ([\w.+-]+))?")
_NO_VERSION = re.compile(r"(/[^\s:]+/(lib[\w.+-]+\.so[\w.]*)): version `([^']+)' not found")
_CUDA_FAILURE = re.compile(r"CUDA failure (\d+): ([^;\n]*)")
# cuBLASLt before cuBLAS: which library an unversioned symbol comes from, by NVIDIA's naming.
_SYMBOL_PREFIXES = (("cublasLt", "libcublasLt"), ("cublas", "libcublas"), ("cudnn", "libcudnn"))
_SYMBOL_PREFIXES += (("curand", "libcurand"), ("cufft", "libcufft"), ("cuda", "libcudart"), ("nvrtc", "libnvrtc"))
# ORT blames "the user" for the probe's own session option (launcher/preflight/probe.py): say so before its words.
_NO_FALLBACK = "ONNX Runtime would have run nodes on the CPU, which the probe forbids on purpose ({})"
PASSED, REFUSED, SKIPPED = "passed", "refused", "skipped"  # a preflight's `result`


@dataclass(frozen=True)
class LibraryRow(RequiredLibrary):
    """A required library and the file it resolves to in the app's environment (None: missing)."""

    path: str | None = None
    dangling: str | None = None  # "PATH -> TARGET": a link by that name on the path whose target does not exist


@dataclass(frozen=True)
class SymbolError:
    """The loader's refusal of a library that resolved but lacks what the provider needs (another release)."""

    soname: str
    symbol: str | None  # None: the whole version node is missing
    version: str | None
    path: str | None  # the file the loader named, when it did

    @property
    def what(self) -> str:
        if self.symbol is None:
            return f"the symbol version {self.version}"
        return f"the symbol {self.symbol}" + (f" ({self.version})" if self.version else "")


def symbol_error(output: str, libraries: Sequence[LibraryRow]) -> SymbolError | None:
    """Pure: the first loader symbol error in the probe's output, with the library it is about (by its version
    node, which NVIDIA names after the soname, else by the symbol's prefix); None when there is none."""
    names = [row.name for row in libraries]
    missing_version = _NO_VERSION.search(output)
    if missing_version:
        path, soname, version = missing_version.groups()
        return SymbolError(soname, None, version, path)
    undefined = _UNDEFINED.search(output)
    if undefined is None:
        return None
    symbol, version = undefined.groups()
    soname = version if version in names else None
    if soname is None:
        stem = next((lib for prefix, lib in _SYMBOL_PREFIXES if symbol.startswith(prefix)), None)
        soname = next((n for n in names if stem and n.startswith(stem + ".so")), None)
    return None if soname is None else SymbolError(soname, symbol, version, None)


@dataclass(frozen=True)
class Verdict:
    ok: bool  # the app may start
    cause: str | None
    message: str
    fix: str
    notes: tuple[str, ...] = ()  # what the probe found that a person should know, whatever the cause
    health: tuple[Finding, ...] = ()  # the app's GPU's health (launcher/preflight/gpuhealth.py), refusals first
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
        summary = {"result": self.result, "ok": ok, "cause": self.cause, "message": self.message}
        return {**summary, "gpu_health": [finding.as_dict() for finding in self.health]}


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
    needed = [r.name for r in rows if r.how == "NEEDED"]
    if needed:
        # Whichever cuDNN library it is (1.20 NEEDs libcudnn_adv.so.9 and the other sub-libraries too).
        return f"the CUDA provider library NEEDs {', '.join(needed)}, so the provider does not load at all"
    if main:
        return "ONNX Runtime opens it when a Conv first runs, so the app fails or falls back to CPU there"
    lib = f"libcudnn.so.{cudnn_major}" if cudnn_major else "libcudnn"
    return f"{lib} is found but opens these itself when a Conv first runs"


def _gpu_list(gpus: Inventory) -> str:
    return ", ".join(f"{g.index} {g.uuid} ({g.name})" for g in gpus.gpus) or "none"


@dataclass
class Evidence:
    """What `decide` weighs: the preflight's findings, and the notes gathered on the way (shown whatever the
    cause)."""

    required: str
    build: OrtBuild | None
    libraries: Sequence[LibraryRow]
    gpus: Inventory
    env: Mapping[str, str]
    probe: ProbeResult
    python: str
    memory_min_mib: int | None = None
    copies: Mapping[str, Sequence[tuple[str, bool | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    health: tuple[Finding, ...] = ()

    @property
    def report(self) -> dict[str, Any]:
        return self.probe.report

    @property
    def ort_version(self) -> str:
        return self.report.get("ort_version") or (self.build.version if self.build else "?")

    @property
    def identity(self) -> str:
        return self.build.identity if self.build else f"onnxruntime {self.ort_version}"

    def refuse(self, cause_id: str, **details: Any) -> Verdict:
        described = causes.describe(cause_id, **details)
        return Verdict(False, cause_id, described.message, described.fix, tuple(self.notes), health=self.health)


def _both_packages(ev: Evidence) -> None:
    """A note, never a cause: both packages in one folder, the one imported decides."""
    build, available = ev.build, ev.report.get("available_providers")
    if build is not None and "onnxruntime" in build.distributions and "onnxruntime_gpu" in build.distributions:
        found = f"its providers: {', '.join(available)}" if available else "the probe did not get that far"
        ev.notes.append(
            f"both `onnxruntime` and `onnxruntime-gpu` are installed in one folder; the onnxruntime "
            f"{ev.ort_version} the probe imported decides ({found})"
        )


def _probe_outcome(ev: Evidence) -> Verdict | None:
    """The probe passed, hung, or never got to onnxruntime."""
    probe, report = ev.probe, ev.report
    if probe.ok:
        max_error = report.get("max_error", 0)
        message = f"the probe ran every node on {ev.required} and matched numpy (max error {max_error:.2g})"
        return _gpu_health(ev) or Verdict(True, None, message, "", tuple(ev.notes), health=ev.health)
    if probe.timed_out:
        return ev.refuse(causes.PROBE_TIMEOUT, timeout=f"{probe.elapsed_s:.0f}")
    stage, error = report.get("stage"), str(report.get("error", ""))
    if stage == "import_onnxruntime" and "No module named 'onnxruntime'" in error:
        return ev.refuse(causes.ONNXRUNTIME_MISSING, python=ev.python)
    if stage in _BEFORE_IMPORT or not report:
        return ev.refuse(causes.PROBE_FAILED, python=ev.python, detail=_first_error(probe), probe_fix=_probe_fix(ev))
    return None


_BEFORE_IMPORT = ("start", "import_numpy", "import_onnxruntime")


def _probe_fix(ev: Evidence) -> str:
    """Import onnxruntime by hand only where the probe failed before or at that import: past it, the import works."""
    if ev.report.get("stage") in _BEFORE_IMPORT or not ev.report:
        return f"run `{ev.python} -c 'import onnxruntime'` in the app dir and fix the error it shows"
    return (
        f"the error is ONNX Runtime's or CUDA's own, shown above (the import of onnxruntime {ev.ort_version} worked): "
        "check the GPU (`nvidia-smi`) and that the library table's CUDA and cuDNN match " + ev.identity
    )


def _app_gpu(ev: Evidence) -> Gpu | None:
    """The GPU the app computes on: HeyGem's cuda:0, the first that CUDA_VISIBLE_DEVICES leaves visible."""
    devices = visibility(ev.env.get("CUDA_VISIBLE_DEVICES"), ev.gpus).devices
    return devices[0] if devices else None


def _gpu_health(ev: Evidence) -> Verdict | None:
    """With a driver: the app's GPU refused by its health (gpuhealth's table)."""
    refusal = next((f for f in ev.health if f.refuse), None)
    if refusal is None:
        return None
    return ev.refuse(refusal.cause, gpu=_gpu_name(ev, refusal.gpu), finding=refusal.message, finding_fix=refusal.fix)


def _gpu_name(ev: Evidence, index: int) -> str:
    gpu = next((g for g in ev.gpus.gpus if g.index == index), None)
    return f"{index}" if gpu is None else f"{index} {gpu.uuid} ({gpu.name})"


def _cpu_only_package(ev: Evidence) -> Verdict | None:
    """The probe's own onnxruntime is the evidence, not the metadata: the files of the last package installed
    win, whichever dist-info directories are left."""
    available, build = ev.report.get("available_providers"), ev.build
    if not available or ev.required in available:
        return None
    where = ev.report.get("ort_file") or "?"
    pin = (build.gpu_dist_version if build else "") or "<pin>"
    detail = f"onnxruntime {ev.ort_version} at {where} offers only {', '.join(available)}"
    if build is not None and build.cpu_package_installed:
        over = " installed over `onnxruntime-gpu`" if "onnxruntime_gpu" in build.distributions else ""
        detail += f"; the CPU package `onnxruntime`{over} provides it"
    return ev.refuse(causes.ONNXRUNTIME_CPU_ONLY, python=ev.python, detail=detail, pin=pin)


def _missing_rows(ev: Evidence) -> list[LibraryRow]:
    """The table's missing rows, plus those ORT's (or cuDNN's) own loader error names: authoritative where the
    static table found a file."""
    later = [r.name for r in ev.libraries if r.path is None and r.optional and r.kind == "cudnn"]
    if later:
        ev.notes.append(
            f"cuDNN's sub-libraries do not resolve: {', '.join(later)}; libcudnn opens them when a Conv runs"
        )
    missing = [row for row in ev.libraries if row.path is None and not row.optional]
    return missing + [row for row in _missing_from_output(ev.probe.output) if row.name not in {m.name for m in missing}]


def _driver_row(ev: Evidence) -> LibraryRow | None:
    return {row.name: row for row in ev.libraries}.get(DRIVER_LIB)


def _driver_absent(ev: Evidence, missing: Sequence[LibraryRow]) -> bool:
    """No libcuda.so.1 and no NVML: whatever ORT's text says (1.16 says "insufficient" without any driver)."""
    row = _driver_row(ev)
    lib_missing = any(r.kind == "driver" for r in missing) or (row is not None and row.path is None)
    return lib_missing and not ev.gpus.available


def _with_dangling(ev: Evidence, names: list[str]) -> list[str]:
    """Each missing library's name, and where a link by that name points nowhere, that link and its target."""
    links = {row.name: row.dangling for row in ev.libraries if row.dangling}
    return [f"{n} (a dangling link: {links[n]})" if n in links else n for n in names]


_HAS = {True: "has it", False: "lacks it too", None: "unreadable"}


def _conflict(ev: Evidence, step: Mapping[str, str]) -> Verdict | None:
    """A library resolved but is another release (the loader's symbol error): the file that won, the copies on the
    path, and which of them is the right one."""
    error = symbol_error(ev.probe.output, ev.libraries)
    if error is None:
        return None
    row = next((r for r in ev.libraries if r.name == error.soname), None)
    won = error.path or (row.path if row else None) or "?"
    copies = [(path, ok) for path, ok in ev.copies.get(error.soname, ()) if path != won]
    right = next((path for path, ok in copies if ok), None)
    listed = "; ".join(f"{path} ({_HAS.get(ok)})" for path, ok in copies)
    shown = f"; other copies on the path: {listed}" if copies else "; no other copy is on the path"
    if right is not None:
        fix = f"remove {won} (or its folder from the library path) so that {right}, which has it, is found first"
    else:
        build = ev.build
        majors = (build.cuda_major, build.cudnn_major) if build else (None, None)
        packages = install_commands([error.soname], *majors, ev.python)
        fix = f"remove {won} and install the release {ev.identity} needs: {packages or 'its CUDA wheel'}"
    return ev.refuse(
        causes.CUDA_LIBRARY_CONFLICT,
        soname=error.soname,
        path=won,
        what=error.what,
        build=ev.identity,
        copies=shown,
        conflict_fix=fix,
        **step,
    )


def _libraries(ev: Evidence) -> Verdict | None:
    """CUDA libraries, then cuDNN, inside the image, naming the driver too when it is missing; then the driver."""
    missing = _missing_rows(ev)
    toolkit = [r.name for r in missing if r.kind == "toolkit"]
    cudnn = [r.name for r in missing if r.kind == "cudnn"]
    build = ev.build
    cuda_major, cudnn_major = (build.cuda_major, build.cudnn_major) if build else (None, None)
    absent = _driver_absent(ev, missing)
    step = {"driver_step": "", "driver_fix": ""}
    if absent:
        step = {
            "driver_step": f"; the NVIDIA driver ({DRIVER_LIB}) is missing too",
            "driver_fix": "; then start the container with the NVIDIA runtime (`docker run --gpus all`)",
        }
    conflict = _conflict(ev, step)
    if conflict is not None:
        return conflict
    generic = "NVIDIA's CUDA wheels or conda's CUDA packages for the build's CUDA major"
    toolkit, cudnn = _with_dangling(ev, toolkit), _with_dangling(ev, cudnn)
    names = toolkit + cudnn
    packages = install_commands(names, cuda_major, cudnn_major, ev.python) or generic
    if toolkit:
        return ev.refuse(
            causes.CUDA_LIBRARIES_MISSING, build=ev.identity, missing=", ".join(names), packages=packages, **step
        )
    if cudnn:
        rows = [r for r in missing if r.kind == "cudnn"]
        when = _cudnn_when(rows, cudnn_major)
        return ev.refuse(
            causes.CUDNN_MISSING,
            build=ev.identity,
            cudnn_major=cudnn_major or "?",
            missing=", ".join(cudnn),
            when=when,
            packages=packages,
            **step,
        )
    if absent:
        said = f' (ONNX Runtime says "{_INSUFFICIENT}": that is its text for no driver too)'
        return ev.refuse(
            causes.DRIVER_MISSING, build=ev.identity, ort_said=said if _INSUFFICIENT in ev.probe.output else ""
        )
    return None


def _devices(ev: Evidence) -> Verdict | None:
    """With a driver: CUDA_VISIBLE_DEVICES and the devices CUDA sees."""
    gpus, output = ev.gpus, ev.probe.output
    seen = visibility(ev.env.get("CUDA_VISIBLE_DEVICES"), gpus)
    if seen.hides_all:
        detail = f"CUDA_VISIBLE_DEVICES={seen.asked!r} selects no device"
        if seen.unmatched is not None and gpus.available:
            detail += f": {seen.unmatched!r} matches none of the GPUs NVML lists ({_gpu_list(gpus)})"
        fix = "unset CUDA_VISIBLE_DEVICES or set it to indices or UUIDs that exist (`nvidia-smi -L`)"
        return ev.refuse(causes.NO_GPU_VISIBLE, detail=detail, visible_fix=fix)
    if seen.unmatched is not None and seen.asked is not None:
        ev.notes.append(
            f"CUDA_VISIBLE_DEVICES={seen.asked!r}: CUDA ignores {seen.unmatched!r} and every entry after it"
        )
    if gpus.available and not gpus.gpus:
        fix = "check `nvidia-smi`"
        return ev.refuse(causes.NO_GPU_VISIBLE, detail="NVML lists 0 devices", visible_fix=fix)
    if "no CUDA-capable device" in output or "cudaErrorNoDevice" in output:
        return ev.refuse(causes.NO_GPU_VISIBLE, detail="CUDA reports no device", visible_fix="check `nvidia-smi -L`")
    return None


def _cuda_error(ev: Evidence) -> Verdict | None:
    """With a driver: CUDA's own error at start (804, 802, 999, 46), as ORT printed it, with the evidence for it."""
    failure = _CUDA_FAILURE.search(ev.probe.output)
    if failure is None or int(failure.group(1)) not in causes.CUDA_ERRORS:
        return None
    code, text = int(failure.group(1)), failure.group(2).strip()
    _name, cause = causes.CUDA_ERRORS[code]
    gpus = ev.gpus.gpus
    names = f" (GPUs: {_gpu_list(ev.gpus)})" if gpus else ""
    if cause == causes.CUDA_FORWARD_COMPAT:
        libcuda = (_driver_row(ev) or LibraryRow(DRIVER_LIB, "driver", "run time")).path or DRIVER_LIB
        folder = libcuda.rsplit("/", 1)[0] if "/" in libcuda else "the compat folder"
        on_path = folder in ev.env.get("LD_LIBRARY_PATH", "").split(":")
        where = (
            "LD_LIBRARY_PATH, HEYGEM_EXTRA_LIBRARY_PATH" if on_path else "the image's /etc/ld.so.conf.d, then ldconfig"
        )
        compat = "" if "/compat" in libcuda else f" ({libcuda} is one, though not in a compat/ folder)"
        return ev.refuse(cause, cuda_text=text, libcuda=libcuda + compat, gpus=names, folder=folder, where=where)
    if cause == causes.GPU_SYSTEM_NOT_READY:
        driver = ev.gpus.driver_version or "the host's"
        return ev.refuse(cause, cuda_text=text, gpus=names, driver_version=driver)
    why, fix = _unavailable(ev, code)
    return ev.refuse(cause, code=code, cuda_text=text, why=why, unavailable_fix=fix)


def _unavailable(ev: Evidence, code: int) -> tuple[str, str]:
    """Why CUDA finds the GPU unusable (46: busy or held exclusively; 999: a bad state), and the fix, from NVML."""
    gpu = _app_gpu(ev)
    index = gpu.index if gpu else 0
    held = gpu is not None and gpu.compute_mode in (1, 3) and bool(gpu.process_pids)
    if held and gpu is not None:
        mode = "Exclusive_Process" if gpu.compute_mode == 3 else "Exclusive_Thread"
        pids = ", ".join(map(str, gpu.process_pids))
        why = f"GPU {_gpu_name(ev, index)} is in compute mode {mode} and held by pid(s) {pids} (host PIDs)"
        return why, f"stop those processes, or set the compute mode to Default (`nvidia-smi -i {index} -c DEFAULT`)"
    if code == 46:
        why = "the GPU is busy or unavailable: held exclusively by another process (compute mode), or out of memory"
        fix = (
            f"see `nvidia-smi -q -d COMPUTE` and its processes: stop the holder, or `nvidia-smi -i {index} -c DEFAULT`"
        )
        return why, fix
    why = "the GPU is in a bad state"
    fix = (
        "look for XID errors on the host (`dmesg | grep -i xid`, `nvidia-smi -q`), then reset the GPU "
        f"(`nvidia-smi -r -i {index}`, every process on it stopped) or reboot the node"
    )
    return why, fix


def _driver_age(ev: Evidence) -> Verdict | None:
    """With a driver: too old for the build's CUDA major (NVML's figure, or CUDA's own words)."""
    gpus, cuda_major = ev.gpus, ev.build.cuda_major if ev.build else None
    driver_major = gpus.cuda_driver_major
    too_old = driver_major is not None and cuda_major is not None and driver_major < cuda_major
    if not too_old and _INSUFFICIENT not in ev.probe.output:
        return None
    return ev.refuse(
        causes.DRIVER_TOO_OLD,
        build=ev.identity,
        driver_version=gpus.driver_version or "(version unknown)",
        driver_cuda=gpus.cuda_driver_version or "?",
        driver_major=driver_major if driver_major is not None else "your driver",
        cuda_major=cuda_major if cuda_major is not None else "?",
        min_driver=MIN_DRIVER.get(cuda_major or 0, "the version NVIDIA lists"),
    )


def _driver_present(ev: Evidence) -> bool:
    row = _driver_row(ev)
    return ev.gpus.available or (row is not None and row.path is not None)


def _provider(ev: Evidence) -> Verdict | None:
    """The probe got a session: a wrong result, or nodes (or the session) on another provider."""
    report, required = ev.report, ev.required
    max_error, tolerance = report.get("max_error"), report.get("tolerance")
    if max_error is not None and tolerance is not None and max_error > tolerance:
        providers = report.get("session_providers") or [required]
        return ev.refuse(causes.WRONG_RESULT, provider=providers[0], max_error=f"{max_error:.3g}")
    off = {op: p for op, p in (report.get("node_providers") or {}).items() if p != required}
    if off:
        detail = ", ".join(f"{op} ran on {p}" for op, p in sorted(off.items()))
        return ev.refuse(causes.PROVIDER_NOT_USED, required=required, detail=detail)
    providers = report.get("session_providers")
    if providers and providers[0] != required:
        return ev.refuse(causes.PROVIDER_NOT_USED, required=required, detail=f"the session chose {providers}")
    if report.get("stage") == "create_session" and NO_CPU_FALLBACK in str(report.get("error", "")):
        detail = _NO_FALLBACK.format(_first_error(ev.probe))
        return ev.refuse(causes.PROVIDER_NOT_USED, required=required, detail=detail)
    return None


# The families of causes, in the order a person must fix them (the module docstring): each gives a verdict or
# passes to the next. The GPU-side ones ask only where CUDA is required, and the device ones only with a driver.
_GPU_SIDE: tuple[Callable[[Evidence], Verdict | None], ...] = (_cpu_only_package, _libraries)
_WITH_DRIVER: tuple[Callable[[Evidence], Verdict | None], ...] = (_gpu_health, _devices, _cuda_error, _driver_age)


def decide(
    required: str,
    build: OrtBuild | None,
    libraries: Sequence[LibraryRow],
    gpus: Inventory,
    env: Mapping[str, str],
    probe: ProbeResult,
    python: str,
    *,
    memory_min_mib: int | None = None,
    copies: Mapping[str, Sequence[tuple[str, bool | None]]] | None = None,
) -> Verdict:
    """Pure: the one cause, from evidence, in a fixed order (see the module docstring). `memory_min_mib`:
    HEYGEM_GPU_MEMORY_MIN; `copies`: for a library the loader refused (`symbol_error`), every copy on the path and
    whether it has what was missing."""
    ev = Evidence(required, build, libraries, gpus, env, probe, python, memory_min_mib, copies or {})
    _both_packages(ev)
    app_gpu = _app_gpu(ev) if required != CPU else None
    ev.health = assess(app_gpu, memory_min_mib) if app_gpu is not None else ()
    ev.notes += [f"GPU {f.gpu}: {f.message} ({f.fix})" for f in ev.health if not f.refuse]
    families: list[Callable[[Evidence], Verdict | None]] = [_probe_outcome]
    if required != CPU:
        families += _GPU_SIDE
        # (decided before the library families run: their notes must not change whether a driver is there)
        if _driver_present(ev):
            families += _WITH_DRIVER
    for family in (*families, _provider):
        found = family(ev)
        if found is not None:
            return found
    return ev.refuse(causes.PROBE_FAILED, python=python, detail=_first_error(probe), probe_fix=_probe_fix(ev))
