"""The preflight: the app's environment, the library table, the GPU inventory, the probe, the verdict.

One `CheckResult` holds all of it; the people's report and `--json` are both rendered from it.

The probe is on the critical path (its python starts and imports onnxruntime): it starts as soon as its
environment is known, so this module imports at the top only what that takes; what reads the build, the
library table, NVML and the verdict is imported after the probe has started, while it runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from launcher.config.settings import Settings
from launcher.errors import ConfigError
from launcher.preflight.appcommand import check_app_command
from launcher.preflight.appenv import AUDIT_SOCKET_VARIABLE, AppEnvironment, prepare_environment
from launcher.preflight.probe import ProbeResult, ProbeRun

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import Any

    from launcher.preflight.ortbuild import OrtBuild
    from launcher.preflight.verdict import LibraryRow, Verdict
    from launcher.system import gpu


@dataclass(frozen=True)
class CheckResult:
    """One app's preflight: its environment, the build, the library table, the GPUs, the probe, the verdict."""

    verdict: Verdict
    settings: Settings
    app: AppEnvironment
    build: OrtBuild | None
    libraries: tuple[LibraryRow, ...]
    gpus: gpu.Inventory
    probe: ProbeResult
    checked_at: float = field(default_factory=time.time)
    # A config error found on the way (the app command cannot start): `--check-only` still reports the
    # provider, then exits 78 with it.
    config_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def libraries_apply(self) -> bool:
        """Whether the CUDA library table bears on the verdict: not when the CPU provider is required."""
        from launcher.preflight.verdict import CPU

        return self.settings.require_provider != CPU

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.settings.warnings + self.app.warnings + self.verdict.notes

    def as_dict(self) -> dict[str, Any]:
        """The `--json` document; secrets masked, like every other output."""
        from launcher.config.masking import mask_env

        build = self.build
        return {
            **self.verdict.summary(),
            "fix": self.verdict.fix or None,
            "required_provider": self.settings.require_provider,
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked_at)),
            "settings": self.settings.as_dict(),
            "conda_env": {
                "prefix": str(self.app.conda.prefix),
                "name": self.app.conda.name,
                "python": str(self.app.conda.python),
                "is_conda": self.app.conda.is_conda,
            },
            "onnxruntime": None
            if build is None
            else {
                "version": build.version,
                "package": build.package_name,
                "cuda_version": build.cuda_version,
                "cuda_major": build.cuda_major,
                "cudnn_major": build.cudnn_major,
                "identity": build.identity,
                "path": str(build.package_dir),
                "distributions": list(build.distributions),
            },
            "library_path": list(self.app.library_path.entries),
            # Listed whatever the provider, as data; with the CPU provider they decide nothing.
            "libraries_apply": self.libraries_apply,
            "libraries": [asdict(row) for row in self.libraries],
            "gpus": self.gpus.as_dict(),
            "probe": {
                "returncode": self.probe.returncode,
                "timed_out": self.probe.timed_out,
                "elapsed_s": self.probe.elapsed_s,
                "report": _without_traceback(self.probe.report),
                "ort_messages": list(self.probe.ort_messages),
                "ort_notes": [{"message": m, "note": note} for m, note in self.probe.ort_notes],
            },
            "environment": mask_env(self.app.env),
            "warnings": list(self.warnings),
            "config_error": self.config_error,
        }


CONFIG_FIX = (
    "correct what the error names (a setting, the app's folder, or a port another process holds); "
    "the provider itself passed the probe"
)


def with_config_refusal(check: CheckResult) -> CheckResult:
    """Pure: `--check-only`'s answer when the probe passed but the app cannot start as configured: REFUSED
    [config_error] naming it, so that neither the report nor the document says OK for an exit 78. A provider
    refusal stays as it is (it is what must be fixed first); doctor keeps the provider's own verdict."""
    if not check.ok or check.config_error is None:
        return check
    from launcher.preflight import causes
    from launcher.preflight.verdict import Verdict

    verdict = Verdict(False, causes.CONFIG_ERROR, check.config_error, CONFIG_FIX, check.verdict.notes)
    return replace(check, verdict=verdict)


def _without_traceback(report: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "traceback"}


def library_table(build: OrtBuild | None, entries: tuple[str, ...]) -> tuple[LibraryRow, ...]:
    from launcher.preflight.libresolve import dangling, resolve
    from launcher.preflight.ortbuild import required_libraries
    from launcher.preflight.verdict import LibraryRow

    if build is None or build.provider_lib is None:
        return ()
    rows = []
    for lib in required_libraries(build):
        path = resolve(lib.name, entries, build.machine)
        broken = dangling(lib.name, entries) if path is None else None
        rows.append(LibraryRow(lib.name, lib.kind, lib.how, lib.optional, path=path, dangling=broken))
    return tuple(rows)


def library_copies(
    output: str, libraries: tuple[LibraryRow, ...], entries: tuple[str, ...], machine: str | None
) -> dict[str, list[tuple[str, bool | None]]]:
    """For a library the loader refused for a missing symbol: every copy on the path, and whether it has it."""
    from launcher.preflight.libresolve import candidates, defines
    from launcher.preflight.verdict import symbol_error

    error = symbol_error(output, libraries)
    if error is None:
        return {}
    found = candidates(error.soname, entries, machine)
    if error.path and error.path not in found:
        found.insert(0, error.path)
    return {error.soname: [(path, defines(path, error.symbol or "", error.version)) for path in found]}


def skipped_preflight(settings: Settings, environ: Mapping[str, str]) -> CheckResult:
    """HEYGEM_PREFLIGHT=skip: the app's environment is prepared as always, but nothing is probed."""
    from launcher.preflight.verdict import Verdict
    from launcher.system import gpu

    app = prepare_environment(settings, environ)
    verdict = Verdict(True, None, "preflight skipped (HEYGEM_PREFLIGHT=skip): nothing was checked", "", skipped=True)
    probe = ProbeResult(None, False, {"skipped": True}, "", 0.0)
    return CheckResult(verdict, settings, app, None, (), gpu.Inventory(False, "not checked"), probe)


def preflight(settings: Settings, environ: Mapping[str, str]) -> CheckResult:
    """What starting the app goes through: the preflight, or its skipped stand-in."""
    if settings.preflight == "skip":
        return skipped_preflight(settings, environ)
    return run_preflight(settings, environ)


def import_evidence() -> None:
    """Imports what reads the build, the library table and NVML and decides the verdict. One app's preflight
    does it once its probe has started; the fleet's before its threads start their probes together (one thread
    importing while the others wait on the import lock and the GIL would start the probes apart)."""
    from launcher.preflight import libresolve, ortbuild, verdict  # noqa: F401
    from launcher.system import gpu  # noqa: F401


def run_preflight(settings: Settings, environ: Mapping[str, str], *, start: bool = True) -> CheckResult:
    """The preflight. `start`: the app is to be started, so an app command that cannot start is a config
    error (ConfigError, 78) before anything is probed; for `--check-only` and `doctor` (start=False) the
    provider is still checked and the error is kept in `config_error`."""
    app = prepare_environment(settings, environ)
    if start:
        check_app_command(settings.app_command, settings.app_dir, app.env, app.conda.prefix)
    # The probe first: the app command, the library table and NVML are checked while its python starts.
    # The app's environment, the session audit in it, less the audit's socket: during a restart the running
    # service listens there, and the probe's session is no app's.
    probe_env = {k: v for k, v in app.env.items() if k != AUDIT_SOCKET_VARIABLE}
    probe_run = ProbeRun(
        app.conda.python, probe_env, settings.app_dir, settings.require_provider, settings.preflight_timeout
    )
    config_error = None
    try:
        if not start:
            try:
                check_app_command(settings.app_command, settings.app_dir, app.env, app.conda.prefix)
            except ConfigError as exc:
                config_error = str(exc)
        import_evidence()
        from launcher.preflight.ortbuild import find_build
        from launcher.preflight.verdict import decide
        from launcher.system import gpu

        build = find_build(app.conda.prefix)
        libraries = library_table(build, app.library_path.entries)
        inventory = gpu.inventory()
    except BaseException:  # SIGTERM, an error: the probe, in its own session, must not be left running
        probe_run.kill()
        raise
    probe = probe_run.wait()
    entries = app.library_path.entries
    copies = library_copies(probe.output, libraries, entries, build.machine if build else None)
    verdict = decide(
        settings.require_provider,
        build,
        libraries,
        inventory,
        app.env,
        probe,
        str(app.conda.python),
        memory_min_mib=settings.gpu_memory_min_mib,
        copies=copies,
    )
    return CheckResult(verdict, settings, app, build, libraries, inventory, probe, config_error=config_error)
