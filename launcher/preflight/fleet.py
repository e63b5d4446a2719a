"""The preflight of every app (`HEYGEM_GPUS`): one probe per GPU, in parallel, each in the exact environment
of its app (its CUDA_VISIBLE_DEVICES, its port), and the verdict under `HEYGEM_GPU_POLICY`.

With one app (the default) the fleet is that app's `CheckResult`, and every output is what it always was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from launcher.config.instances import SINGLE_PROGRAM, Instance, plan, policy_met
from launcher.config.settings import Settings
from launcher.preflight import probe
from launcher.preflight.appenv import PORT_VARIABLE, app_port
from launcher.preflight.check import CheckResult, import_evidence, preflight, run_preflight
from launcher.preflight.check import with_config_refusal as check_with_config_refusal

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import Any

    # imported where used: the probe starts before the verdict's and NVML's modules are needed
    from launcher.preflight.verdict import Verdict
    from launcher.system import gpu

VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class MemberCheck:
    instance: Instance
    check: CheckResult

    def as_dict(self) -> dict[str, Any]:
        verdict = self.check.verdict
        return {
            **self.instance.as_dict(),
            "gpu": self.instance.gpu_label,
            **verdict.summary(),
            "fix": verdict.fix or None,
            "probe_elapsed_s": self.check.probe.elapsed_s,
            # What the probe child itself saw: proof that it ran pinned to this GPU.
            "probe_cuda_visible_devices": self.check.probe.report.get("cuda_visible_devices"),
        }


@dataclass(frozen=True)
class FleetCheck:
    """Every app's preflight. `settings` are the fleet's (each member's differ only in the port)."""

    settings: Settings
    members: tuple[MemberCheck, ...]

    @property
    def single(self) -> bool:
        return self.settings.gpus is None

    @property
    def passing(self) -> tuple[MemberCheck, ...]:
        return tuple(m for m in self.members if m.check.ok)

    @property
    def failing(self) -> tuple[MemberCheck, ...]:
        """Provider refusals before config errors: the provider is what must be fixed first."""
        from launcher.preflight import causes

        refused = [m for m in self.members if not m.check.ok]
        return tuple(sorted(refused, key=lambda m: m.check.verdict.cause == causes.CONFIG_ERROR))

    @property
    def ok(self) -> bool:
        return policy_met(self.settings.gpu_policy, [m.check.ok for m in self.members])

    @property
    def running(self) -> tuple[MemberCheck, ...]:
        """The apps to start: all of them under `all`; under `any` those whose GPU passed."""
        return self.passing if self.ok else ()

    @property
    def primary(self) -> CheckResult:
        """The check shown in full: the first that refused, else the first."""
        return (self.failing or self.members)[0].check

    @property
    def checked_at(self) -> float:
        return min(m.check.checked_at for m in self.members)

    @property
    def config_error(self) -> str | None:
        return self.primary.config_error

    @property
    def verdict(self) -> Verdict:
        """One app: its own. Several: the first refusal, named with its GPU; or how many passed."""
        if self.single:
            return self.primary.verdict
        from launcher.preflight.verdict import Verdict

        total, passed = len(self.members), len(self.passing)
        policy = f"HEYGEM_GPU_POLICY={self.settings.gpu_policy}"
        if not self.ok:
            first = self.failing[0]
            v = first.check.verdict
            others = f" ({len(self.failing) - 1} more GPU(s) refused too)" if len(self.failing) > 1 else ""
            message = f"{first.instance.gpu_label}: {v.message}{others}; {policy} needs "
            message += "every GPU to pass" if self.settings.gpu_policy == "all" else "at least one GPU to pass"
            return Verdict(False, v.cause, message, v.fix, v.notes, health=v.health)
        if self.skipped:
            message = f"preflight skipped (HEYGEM_PREFLIGHT=skip) for {total} GPUs: nothing was checked"
            return Verdict(True, None, message, "", skipped=True)
        notes = tuple(f"{m.instance.gpu_label} refused [{m.check.verdict.cause}]: not started" for m in self.failing)
        message = f"{passed} of {total} GPUs passed ({policy}): {self.primary.verdict.message}"
        if self.failing:
            message = (
                f"{passed} of {total} GPUs passed ({policy}); starting only those: "
                + self.passing[0].check.verdict.message
            )
        return Verdict(True, None, message, "", notes)

    @property
    def skipped(self) -> bool:
        """HEYGEM_PREFLIGHT=skip: nothing was checked, for any GPU."""
        return all(m.check.verdict.skipped for m in self.members)

    def as_dict(self) -> dict[str, Any]:
        """The `--json` document: one app's as always; with several, the first refusal's in full (or the
        first's), the fleet's verdict over it, and each app's line under `instances`."""
        data = self.primary.as_dict()
        if self.single:
            return data
        verdict = self.verdict
        return {
            **data,
            **verdict.summary(),
            "fix": verdict.fix or None,
            "gpu_policy": self.settings.gpu_policy,
            "instances": [m.as_dict() for m in self.members],
        }


def with_config_refusal(fleet: FleetCheck) -> FleetCheck:
    """Pure: `--check-only`'s fleet, each app whose probe passed but whose command cannot start refused as
    [config_error] (`preflight.with_config_refusal`)."""
    members = tuple(replace(m, check=check_with_config_refusal(m.check)) for m in fleet.members)
    return replace(fleet, members=members)


def member_environ(environ: Mapping[str, str], instance: Instance) -> dict[str, str]:
    """Pure: the environment an app's preflight (and so the app) starts from: its GPU (its port is a setting)."""
    env = dict(environ)
    if instance.cuda_visible_devices is not None:
        env[VISIBLE] = instance.cuda_visible_devices
    return env


def instances_for(settings: Settings, environ: Mapping[str, str], inventory: gpu.Inventory) -> tuple[Instance, ...]:
    """The apps the settings ask for (ConfigError naming HEYGEM_GPUS when they cannot be had)."""
    inherited = settings.app_env.get(PORT_VARIABLE) if PORT_VARIABLE not in environ else environ[PORT_VARIABLE]
    base, _warning = app_port(settings.app_port, inherited)
    visible = environ.get(VISIBLE, settings.app_env.get(VISIBLE))
    return plan(settings.gpus, visible, inventory, base)


def fleet_preflight(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    start: bool = True,
    inventory: Callable[[], gpu.Inventory] | None = None,
) -> FleetCheck:
    """Every app's preflight (`preflight`, or `run_preflight(start=False)` for --check-only and doctor), in
    parallel threads, each probe a child of its own. Raises ConfigError as the single preflight does.
    `inventory`: NVML's (`gpu.inventory`) unless given."""
    if settings.gpus is None:
        check = preflight(settings, environ) if start else run_preflight(settings, environ, start=False)
        return FleetCheck(settings, (MemberCheck(Instance(0, SINGLE_PROGRAM, None, None, check.app.port), check),))
    if inventory is None:
        from launcher.system.gpu import inventory as nvml_inventory

        inventory = nvml_inventory
    planned = instances_for(settings, environ, inventory())

    def one(instance: Instance) -> MemberCheck:
        own = replace(settings, app_port=instance.port)
        env = member_environ(environ, instance)
        check = preflight(own, env) if start else run_preflight(own, env, start=False)
        return MemberCheck(instance, check)

    # Only here: one app's preflight (the default) must not pay for the import (~8 ms, on the critical path).
    from concurrent.futures import ThreadPoolExecutor, wait

    import_evidence()

    # One thread per GPU (at most 64), whatever the cores: each only waits on its probe child, and the probes'
    # CUDA start-ups overlap.
    pool = ThreadPoolExecutor(max_workers=len(planned))
    futures = [pool.submit(one, instance) for instance in planned]
    try:
        members = tuple(future.result() for future in futures)
    except BaseException:
        # SIGTERM (raised here as Interrupted) or an error: no probe may outlive the preflight, and the
        # threads must not be waited for until each probe's timeout. Probes a thread is about to start are
        # refused once closed.
        pool.shutdown(wait=False, cancel_futures=True)
        while not all(future.done() for future in futures):
            probe.kill_running()
            wait(futures, timeout=0.05)
        raise
    pool.shutdown()
    return FleetCheck(settings, members)
