"""Refusals that need no probe, made before the preflight when the service is to start.

A second `heygem-launch` on a run dir in use, a busy port, or an app command that cannot start would otherwise
be told so only after the whole preflight (seconds on a GPU, and a report that says OK): these are answered
first, in well under a second, with one line and exit 78. The service checks the run dir and the ports again
as it starts (something may have taken them during the preflight). `--check-only` reports the app command and
the ports with the provider (`start_conflict`: one result, one verdict with the start), except the ports the
service of its run dir holds itself; a restart checks only ports its apps do not hold already
(`service.finish_restart`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from launcher.config.instances import SINGLE_PROGRAM, Instance
from launcher.config.settings import Settings
from launcher.errors import ConfigError, LaunchError
from launcher.preflight.appcommand import check_app_command
from launcher.preflight.appenv import prepare_environment
from launcher.preflight.fleet import instances_for
from launcher.system import gpu, ports
from launcher.system.rundir import RunDir, check_not_in_use, running_pid


def metrics_clash(metrics_port: int | None, apps: Iterable[Instance]) -> str | None:
    """Pure: why HEYGEM_METRICS_PORT cannot be an app's port (the app would move elsewhere, as Gradio tries the
    next port, and `probe ready` would ask the metrics server), or None."""
    for app in apps:
        if metrics_port is not None and app.port == metrics_port:
            offset = f" + {app.position}" if app.position else ""
            return f"HEYGEM_METRICS_PORT={metrics_port}: it is the port of {app.program} (HEYGEM_APP_PORT{offset})"
    return None


def planned_apps(
    settings: Settings, environ: Mapping[str, str], single_port: int, inventory: Callable[[], gpu.Inventory]
) -> tuple[Instance, ...]:
    """The apps the service would start, with their ports: the one app on `single_port` (the port its prepared
    environment has), or one per GPU with HEYGEM_GPUS (HEYGEM_APP_PORT + i; ConfigError naming HEYGEM_GPUS)."""
    if settings.gpus is None:
        return (Instance(0, SINGLE_PROGRAM, None, None, single_port),)
    return instances_for(settings, environ, inventory())


def check_ports(apps: Sequence[Instance], metrics_port: int | None) -> None:
    """LaunchError (78) naming the first busy port: an app's, then the metrics port, or their clash."""
    for app in apps:
        ports.check_free(app.port)
    clash = metrics_clash(metrics_port, apps)
    if clash:
        raise ConfigError(clash)
    if metrics_port is not None:
        ports.check_metrics_free(metrics_port)


def check_before_preflight(
    settings: Settings, environ: Mapping[str, str], inventory: Callable[[], gpu.Inventory] = gpu.inventory
) -> None:
    """The service's refusals that need no probe, in this order: the run dir is in use by another heygem-launch;
    the app's environment cannot be prepared or its command cannot start; a port is busy (each app's, then
    the metrics port). Raises LaunchError/ConfigError (exit 78) with one line naming the key or file."""
    check_not_in_use(RunDir(settings.run_dir))
    # Only the PATH and prefix matter here; each app's own environment (its GPU, its port) is the preflight's.
    app = prepare_environment(settings, environ)
    check_app_command(settings.app_command, settings.app_dir, app.env, app.conda.prefix)
    check_ports(planned_apps(settings, environ, app.port, inventory), settings.metrics_port)


def start_conflict(settings: Settings, apps: Sequence[Instance]) -> str | None:
    """For `--check-only`: the line that would refuse the start (78) although the preflight may pass: the metrics
    port on an app's, or a busy port. Ports held while the heygem-launch that owns this run dir runs are its own
    apps' (`--check-only` by hand in a running container), not a conflict; their clash with the metrics port is."""
    try:
        if running_pid(RunDir(settings.run_dir)) is None:
            check_ports(apps, settings.metrics_port)
        else:
            return metrics_clash(settings.metrics_port, apps)
    except LaunchError as exc:
        return str(exc)
    return None
