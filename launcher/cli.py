"""The command line: parse, call one function, render its result, map it to an exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from launcher import exitcodes
from launcher.commands.check import check as run_check
from launcher.commands.check import guarded as _guarded
from launcher.commands.run import serve
from launcher.config.flags import SETTING_OPTIONS as _SETTING_OPTIONS
from launcher.config.settings import Settings, load_settings
from launcher.config.specs import SPECS
from launcher.errors import ConfigError, LaunchError, one_line
from launcher.system.outlet import hold_std_fds
from launcher.system.rundir import RunDir


def _param(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def setting_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option, _key, help_text in reversed(_SETTING_OPTIONS):
        func = click.option(option, _param(option), default=None, help=help_text)(func)
    return func


def collect_flags(ctx: click.Context, params: dict[str, Any]) -> dict[str, str | None]:
    """Flags given here over those given to the group (`heygem-launch --app-dir X check`)."""
    flags: dict[str, str | None] = dict(ctx.obj or {})
    for option, key, _help in _SETTING_OPTIONS:
        value = params.pop(_param(option), None)
        if value is not None:
            flags[key] = value
    return flags


def _settings_help() -> str:
    """The settings, for `--help`: each is read from the environment or the .env file."""
    lines = ["Settings (environment, or the .env file; flags above win over both):", ""]
    lines += [f"{spec.key}: {spec.help}" for spec in SPECS]
    return "\n\n".join(lines)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_settings_help(),
)
@setting_options
@click.option("--check-only", is_flag=True, help="run the preflight, print the report, and exit (same as `check`)")
@click.option("--json", "as_json", is_flag=True, help="with --check-only: one JSON document on stdout")
@click.version_option(package_name="heygem-launcher")
@click.pass_context
def cli(ctx: click.Context, check_only: bool, as_json: bool, **params: Any) -> None:
    """Start HeyGem's app only where ONNX Runtime really runs on the GPU.

    With no command: preflight, then run and supervise the app. Exit codes: 0 ok or clean stop,
    64 usage, 69 refused (the app would run on the wrong provider), 70 app crash-looped, 71 a GPU faulted at run
    time, 78 bad config.
    """
    flags = collect_flags(ctx, params)
    ctx.obj = flags
    if ctx.invoked_subcommand is not None:
        if check_only:
            raise click.UsageError("--check-only takes no command")
        return
    if check_only:
        sys.exit(_guarded(lambda: run_check(load_settings(flags), as_json, click.echo)))
    if as_json:
        raise click.UsageError("--json needs --check-only or a command")
    sys.exit(_guarded(lambda: serve(flags, click.echo)))


def _warn_unapplied(flags: dict[str, str | None]) -> None:
    """For commands that only ask the running service (status, probe): they answer from the run dir whatever
    the .env file and this shell's environment hold, but a value that a `restart` would refuse is worth a
    warning. The error names where the value came from (the file and line, the environment, a flag)."""
    try:
        load_settings(flags)
    except ConfigError as exc:
        click.echo(
            f"heygem-launch: warning: {exc}; a restart would refuse it (this command answers from the service's "
            "run dir, not from these settings)",
            err=True,
        )


def subcommand(
    *extra: Callable[..., Any],
    name: str | None = None,
    json_output: bool = True,
    client: bool = False,
    warn_unapplied: bool = False,
    probe: bool = False,
    app_on_disk: bool = True,
) -> Callable[[Callable[..., int]], click.Command]:
    """A `cli` command whose function gets the loaded settings (the setting flags given to it or to the
    group), `as_json` when it has `--json`, and its own arguments; what it returns is the exit code.
    A `client` command talks to the running service: it gets the service's run dir and the flags instead,
    and never reads the .env file's other settings (a file being edited must not fail it). `app_on_disk`: the
    app's folder and log must exist as set (False for `replay`, run off the app's machine with its settings)."""

    def decorate(func: Callable[..., int]) -> click.Command:
        @functools.wraps(func)
        @click.pass_context
        def command(ctx: click.Context, **params: Any) -> None:
            flags = collect_flags(ctx, params)
            if client:
                from launcher.commands.client import client_run_dir

                try:
                    run = client_run_dir(flags)
                except LaunchError as exc:
                    if not probe:
                        raise
                    # A probe only passes or fails: Docker and Kubernetes read 0 or not, and README says 1.
                    click.echo(f"{params.get('kind')}: FAIL: {exc}")
                    sys.exit(1)
                if warn_unapplied:
                    _warn_unapplied(flags)
                sys.exit(_guarded(lambda: func(run, flags, **params)))
            sys.exit(_guarded(lambda: func(load_settings(flags, check_disk=app_on_disk), **params)))

        for decorator in (*reversed(extra), setting_options):
            command = decorator(command)
        if json_output:
            command = click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")(command)
        return cli.command(name=name)(command)

    return decorate


@subcommand()
def check(settings: Settings, as_json: bool) -> int:
    """Run the preflight and report; exit 0 only if the required provider ran the probe."""
    return run_check(settings, as_json, click.echo)


@subcommand(client=True, warn_unapplied=True)
def status(run: RunDir, _flags: dict[str, str | None], as_json: bool) -> int:
    """Each program's state, pid, uptime and restarts, and the last preflight. Exit 0 if the app runs."""
    from launcher.commands.status import render_status
    from launcher.commands.status import status as get_status
    from launcher.preflight.report import to_json

    result = get_status(run)
    click.echo(to_json(result.as_dict()) if as_json else render_status(result))
    return exitcodes.OK if result.ok else exitcodes.UNAVAILABLE


@subcommand(client=True)
def restart(run: RunDir, flags: dict[str, str | None], as_json: bool) -> int:
    """Re-read the settings and .env (with the setting flags given here over the service's), preflight them
    while the app keeps serving, and only on pass restart the app with the new environment (the same as SIGHUP
    to heygem-launch); if the new app is not ready within HEYGEM_RESTART_TIMEOUT, the previous one comes back.
    Exit 0 restarted, 69 refused or rolled back (the previous app runs), 78 the new settings are invalid."""
    from launcher.commands.restart import restart as do_restart
    from launcher.preflight.report import to_json

    # Checked here first (78 at once, nothing signalled); the service checks again with its own environment.
    load_settings(flags)
    result = do_restart(run, flags)
    if as_json:
        click.echo(to_json(result))
    else:
        if result.get("report"):
            click.echo(result["report"])
        click.echo(f"heygem-launch: {result.get('message')}", err=not result.get("ok"))
    return int(result.get("exit_code", exitcodes.SOFTWARE))


@subcommand(client=True)
def doctor(run: RunDir, flags: dict[str, str | None], as_json: bool) -> int:
    """Diagnose: GPUs, the running app's real environment and CUDA use, a fresh preflight, the log's
    queue/blocking/ERROR/GPU lines, and the most likely cause. Exit 0 no problem found, 69 a problem."""
    from launcher.commands.client import service_settings
    from launcher.commands.doctor import render, run_doctor
    from launcher.preflight.report import to_json
    from launcher.system.rundir import running_pid

    # The running service's own settings; the files only when no service runs.
    settings = (service_settings(run) if running_pid(run) else None) or load_settings(flags)
    result = run_doctor(settings, dict(os.environ))
    click.echo(to_json(result.as_dict()) if as_json else render(result))
    return exitcodes.UNAVAILABLE if result.problem else exitcodes.OK


@subcommand(
    click.argument("kind", type=click.Choice(["live", "ready", "startup"])),
    name="probe",
    json_output=False,
    client=True,
    warn_unapplied=True,
    probe=True,
)
def probe_command(run: RunDir, _flags: dict[str, str | None], kind: str) -> int:
    """Health probe for Docker HEALTHCHECK / Kubernetes: exit 0 pass, 1 fail.

    live: heygem-launch, supervisord and the app run. ready: the app's readiness markers were seen, its port
    answers, and no incident is open. startup: the preflight passed (or was skipped: HEYGEM_PREFLIGHT=skip)
    and the app has started.
    """
    from launcher.commands.probes import probe

    answer = probe(kind, run)
    click.echo(answer.line())
    return 0 if answer.ok else 1


@subcommand(
    click.argument("dh_log", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
    click.option(
        "--stderr",
        "stderr",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="the app's stderr (the second copy of each record, and ONNX Runtime's own lines)",
    ),
    click.option(
        "--stdout",
        "stdout",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="the app's print() output (no times: read after the rest)",
    ),
    app_on_disk=False,
)
def replay(settings: Settings, as_json: bool, dh_log: Path, stderr: Path | None, stdout: Path | None) -> int:
    """The watchdog's rules over a recorded HeyGem log, on the lines' own timestamps: readiness, each task
    (code, frames, frames/s, outcome) and each incident with what the service would have done. Exit 0."""
    from launcher.preflight.report import to_json
    from launcher.watch.replay import render, replay

    try:
        result = replay(settings, dh_log, stderr, stdout)
    except OSError as exc:
        raise LaunchError(f"{exc.filename}: cannot read: {exc.strerror}", exit_code=exitcodes.CONFIG) from None
    click.echo(to_json(result.as_dict()) if as_json else render(result))
    return exitcodes.OK


def asked_for_json(args: list[str]) -> bool:
    """Whether the command line asks for `--json` (given as an option, `--json=x` too), read as click reads it
    where click could not finish: not as another option's value (`--app-dir --json`), nor after `--`."""
    takes_value = {
        name
        for command in (cli, *cli.commands.values())
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            return False
        if arg == "--json" or arg.startswith("--json="):
            return True
        if arg in takes_value:
            next(rest, None)
    return False


def fail(error: str, code: int, argv: list[str] | None) -> NoReturn:
    """One error line on stderr and exit `code`; when `--json` was asked for, also the error's document on
    stdout, a usage error's too: --json promises one document there (a script reads stdout)."""
    click.echo(f"heygem-launch: error: {error}", err=True)
    if asked_for_json(sys.argv[1:] if argv is None else argv):
        from launcher.preflight.report import to_json

        click.echo(to_json({"ok": False, "error": error, "exit_code": code}))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's usage errors exit 64 (sysexits), our errors one line and their code."""
    hold_std_fds()  # before anything opens a file: a closed 1 or 2 would be taken by it
    try:
        cli.main(args=argv, prog_name="heygem-launch", standalone_mode=False)
    except click.UsageError as exc:
        if exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
        fail(exc.format_message(), exitcodes.USAGE, argv)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        fail(exc.format_message(), exitcodes.USAGE, argv)
    except LaunchError as exc:
        fail(str(exc), exc.exit_code, argv)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug of ours: one line, not a traceback, unless asked for
        if os.environ.get("HEYGEM_DEBUG"):
            raise
        line = one_line(f"{type(exc).__name__}: {exc}")
        click.echo(f"heygem-launch: internal error: {line} (HEYGEM_DEBUG=1 shows more)", err=True)
        sys.exit(exitcodes.SOFTWARE)
    sys.exit(exitcodes.OK)
