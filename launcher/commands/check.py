"""`--check-only` and `check`: every app's preflight, its report (or the `--json` document), its exit code.

No click here: the click CLI (launcher/cli.py) and the `--check-only` fast path (launcher/__main__.py) both
call `check` with their own `echo`, which takes click.echo's `(message, err=False)`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Iterator

from launcher import exitcodes
from launcher.config.settings import Settings
from launcher.errors import LaunchError, one_line
from launcher.system.signalinbox import STRAY, stray_line

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the start path
if TYPE_CHECKING:
    from launcher.preflight.fleet import FleetCheck

Echo = Callable[..., None]


class Interrupted(BaseException):
    """SIGTERM or SIGINT before the service loop takes over signals: unwinds the preflight (which kills its
    probe's process group on the way out) instead of dying with it still running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _stray(signum: int, _frame: object) -> None:
    # os.write: one line, whatever state sys.stderr's buffer is in when the signal lands.
    with contextlib.suppress(OSError):
        os.write(2, f"heygem-launch: {stray_line(signum)}\n".encode())


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP raise Interrupted until the block ends, and stray signals are said and ignored,
    as the service does once it runs (it installs its own handlers)."""
    # SIGHUP too, unless ignored (nohup): its default action would end the launcher with the probe, in its own
    # session, left running.
    ending = [signal.SIGTERM, signal.SIGINT] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) != signal.SIG_IGN)
    old = {signum: signal.signal(signum, _interrupt) for signum in ending}
    old.update({signum: signal.signal(signum, _stray) for signum in STRAY})
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def interrupted(exc: Interrupted, what: str, echo: Echo) -> int:
    """Says which signal stopped what, and returns its exit code (128 + N)."""
    name = signal.Signals(exc.signum).name
    echo(f"heygem-launch: {name} {what}: the probe was stopped and the app not started", err=True)
    from launcher.service.exitpolicy import interrupted_code

    return interrupted_code(exc.signum)


def stdout_reader_gone(fd: int = 1) -> bool:
    """True when `fd` is a pipe whose reader has gone (`heygem-launch status | head`): poll() reports
    POLLERR on such a pipe's write end (pipe(7))."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & select.POLLERR for _fd, event in poller.poll(0))


def guarded(call: Callable[[], int]) -> int:
    """A command's exit code. click turns any BrokenPipeError into a quiet exit 1, which is right only for our
    own stdout closed by its reader; a pipe to one of our children (a probe, a shell) breaking is an error
    that must be said, with its code."""
    try:
        return call()
    except BrokenPipeError as exc:
        if stdout_reader_gone():
            raise
        raise LaunchError(f"internal error: a pipe to a child process broke: {exc}") from None


def check(settings: Settings, as_json: bool, echo: Echo) -> int:
    """The preflight of every app, reported; 0 passed, 69 refused, 78 the app cannot start as configured."""
    # Imported here so that `--help` and usage errors stay fast.
    from launcher.preflight import early
    from launcher.preflight.fleet import fleet_preflight, with_config_refusal

    if early.pending():
        # The probe runs already (launcher/preflight/early.py): what comes after it is loaded while it runs.
        import importlib

        for module in ("launcher.preflight.report", "launcher.service.startchecks"):
            importlib.import_module(module)

    if not as_json:
        for warning in settings.warnings:
            echo(f"heygem-launch: warning: {one_line(warning)}", err=True)
    try:
        with interruptible():
            probed = fleet_preflight(settings, os.environ, start=False)
    except Interrupted as exc:
        return interrupted(exc, "during the preflight", echo)
    from launcher.preflight.report import render_fleet, to_json

    # One result, one verdict: a provider that passed with an app that cannot start is REFUSED [config_error]
    # in the report and the document alike, never OK with exit 78.
    result = with_config_refusal(with_start_conflict(probed, settings))
    echo(to_json(result.as_dict()) if as_json else render_fleet(result))
    # The provider is the question --check-only answers first (69); an app that could not start as configured
    # is named either way, and is the exit code (78) when the provider passed.
    if result.config_error:
        echo(f"heygem-launch: error: {result.config_error}", err=True)
    if not probed.ok:
        return exitcodes.UNAVAILABLE
    return exitcodes.CONFIG if result.config_error else exitcodes.OK


def with_start_conflict(fleet: FleetCheck, settings: Settings) -> FleetCheck:
    """`fleet` with what would refuse the start itself (a busy port, the metrics port on an app's) as each app's
    config error, unless it has one already: `--check-only` never says OK where the start says 78."""
    from dataclasses import replace

    from launcher.service.startchecks import start_conflict

    conflict = start_conflict(settings, [m.instance for m in fleet.members])
    if conflict is None:
        return fleet
    members = tuple(
        m if m.check.config_error else replace(m, check=replace(m.check, config_error=conflict)) for m in fleet.members
    )
    return replace(fleet, members=members)
