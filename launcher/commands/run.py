"""`heygem-launch` with no command: the preflight, then the app run and supervised (or exit 69, nothing started).

No click here: the click CLI (launcher/cli.py) and the plain-invocation path (launcher/__main__.py) both call
`run` with their own `echo`, which takes click.echo's `(message, err=False)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from launcher import exitcodes
from launcher.commands.check import Echo, Interrupted, interrupted, interruptible
from launcher.config.settings import Settings, load_settings
from launcher.errors import LaunchError, one_line


def serve(flags: Mapping[str, str | None], echo: Echo) -> int:
    """The run with the settings the flags give; an error before the service ran (a bad setting, a busy port) is
    the termination message too (Kubernetes shows it as the container's last words)."""
    from launcher.system import openssl, termination

    try:
        settings = load_settings(flags)
        if settings.metrics_port is None:  # prometheus-client imports ssl; nothing else here uses TLS
            openssl.keep_out()
        return run(settings, flags, echo)
    except LaunchError as exc:
        termination.write(str(exc))
        raise


def run(settings: Settings, flags: Mapping[str, str | None], echo: Echo) -> int:
    """Preflight; on refusal exit 69 without starting anything; on pass run and supervise the app."""
    from launcher.preflight.fleet import fleet_preflight
    from launcher.preflight.report import render_fleet
    from launcher.service.service import make_service
    from launcher.service.startchecks import check_before_preflight

    for warning in settings.warnings:
        echo(f"heygem-launch: warning: {one_line(warning)}", err=True)
    # What needs no probe is refused first, in one line (78), not after seconds of preflight and its report.
    check_before_preflight(settings, os.environ)
    if settings.preflight == "skip":
        echo(
            "heygem-launch: WARNING: HEYGEM_PREFLIGHT=skip: starting the app WITHOUT the preflight; "
            "nothing proves it runs on the GPU (the runtime CPU-fallback guard still applies)",
            err=True,
        )
    try:
        with interruptible():
            result = fleet_preflight(settings, os.environ)
            # To stderr: stdout carries the app's own output.
            echo(render_fleet(result), err=True)
            if not result.ok:
                echo("heygem-launch: refusing to start the app", err=True)
                from launcher.system import termination

                verdict = result.verdict
                termination.write(f"REFUSED [{verdict.cause}]: {verdict.message}", settings.termination_log)
                return exitcodes.UNAVAILABLE
            service = make_service(settings, flags, result)
    except Interrupted as exc:
        return interrupted(exc, "during the preflight", echo)
    return service.serve()
