"""`heygem-launch` (the console script) and `python -m launcher`.

The two plain invocations skip click and the CLI's module: `--check-only` (with `--json` and setting flags at
most), whose start is on the probe's critical path (the yardstick is the naive provider check, one
interpreter importing onnxruntime), and the run with setting flags at most (the container's command), which
then need not keep click in memory for as long as it supervises the app. Everything else, and anything this
reading is unsure of, goes to the click CLI (launcher/cli.py), which parses a plain invocation the same way:
the calls, the output, the error lines and the exit codes are the CLI's (`launcher.cli.main`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import NoReturn


def plain_invocation(args: list[str], environ: Mapping[str, str]) -> tuple[str, dict[str, str], bool] | None:
    """Pure: ("check", setting flags, as_json) for `--check-only` with only `--json` and setting flags beside
    it; ("run", setting flags, False) for setting flags alone. Each given once, no value that starts with `-`
    (`--app-dir X` or `--app-dir=X`). Else None, and None too while click's shell completion is asked for."""
    if environ.get("_HEYGEM_LAUNCH_COMPLETE"):
        return None
    from launcher.config.flags import SETTING_OPTIONS

    keys = {option: key for option, key, _help in SETTING_OPTIONS}
    flags: dict[str, str] = {}
    seen: set[str] = set()
    rest = iter(args)
    for arg in rest:
        name, value = arg, None
        if arg not in ("--check-only", "--json"):
            name, equals, value = arg.partition("=")
            if name not in keys:
                return None
            if not equals:
                value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
        if name in seen:
            return None
        seen.add(name)
        if value is not None:
            flags[keys[name]] = value
    if "--check-only" in seen:
        return "check", flags, "--json" in seen
    return None if "--json" in seen else ("run", flags, False)


def _sane(stream: object) -> bool:
    """A text stream click.echo writes to as it is (not None, not ASCII: click would re-wrap that one)."""
    import codecs

    encoding = getattr(stream, "encoding", None)
    try:
        return stream is not None and encoding is not None and codecs.lookup(encoding).name != "ascii"
    except LookupError:
        return True


def echo(message: str = "", err: bool = False) -> None:
    """click.echo for text on a sane stream: a newline added, ANSI sequences stripped unless the stream is a
    terminal, flushed."""
    stream = sys.stderr if err else sys.stdout
    out = message + "\n"
    if "\033" in out:
        try:
            tty = stream.isatty()
        except Exception:
            tty = False
        if not tty:
            import re

            out = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", out)
    stream.write(out)
    stream.flush()


class _Pacified:
    """click's PacifyFlushWrapper: once stdout's reader has gone, the interpreter's last flush says nothing."""

    def __init__(self, wrapped: object) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        import errno

        try:
            self.wrapped.flush()  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> object:
        return getattr(self.wrapped, attr)


def plain(command: str, flags: dict[str, str], as_json: bool) -> NoReturn:
    """A plain invocation, as `launcher.cli.main` runs it: the same calls, errors and exit codes."""
    from launcher import exitcodes
    from launcher.commands.check import guarded
    from launcher.config.settings import load_settings
    from launcher.errors import LaunchError

    def call() -> int:
        if command == "check":
            from launcher.commands.check import check

            return check(load_settings(flags), as_json, echo)
        from launcher.commands.run import serve

        return serve(flags, echo)

    try:
        code = guarded(call)
    except LaunchError as exc:
        echo(f"heygem-launch: error: {exc}", err=True)
        if as_json:
            # --json promises one document on stdout, an error's too (a script reads stdout, not stderr).
            from launcher.preflight.report import to_json

            echo(to_json({"ok": False, "error": str(exc), "exit_code": exc.exit_code}))
        code = exc.exit_code
    except (EOFError, KeyboardInterrupt):
        echo(err=True)  # click's Abort
        code = 130
    except Exception as exc:
        import errno

        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:  # our stdout's reader has gone: click's exit 1
            sys.stdout, sys.stderr = _Pacified(sys.stdout), _Pacified(sys.stderr)  # type: ignore[assignment]
            sys.exit(1)
        if os.environ.get("HEYGEM_DEBUG"):
            raise
        from launcher.errors import one_line

        line = one_line(f"{type(exc).__name__}: {exc}")
        echo(f"heygem-launch: internal error: {line} (HEYGEM_DEBUG=1 shows more)", err=True)
        code = exitcodes.SOFTWARE
    if command == "check":
        # The check's last step is on its critical path: frozen, the objects of every module it imported are
        # not traversed again by the collections of the interpreter's teardown (~5 ms instead of ~18 here).
        import gc

        gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a plain invocation here, anything else through the click CLI."""
    args = sys.argv[1:] if argv is None else list(argv)
    invocation = plain_invocation(args, os.environ) if _sane(sys.stdout) and _sane(sys.stderr) else None
    if invocation is not None and invocation[0] == "check":
        # The probe first, before the settings' modules load (launcher/preflight/early.py): the preflight
        # adopts it when it is exactly the probe it would start.
        from launcher.preflight import early

        try:
            early.start(invocation[1], os.environ)
            plain(*invocation)
        except KeyboardInterrupt:  # SIGINT before plain() handles it: as plain() says it (click's Abort)
            echo(err=True)
            sys.exit(130)
        finally:
            early.discard()
    if invocation is not None:
        plain(*invocation)
    from launcher.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
