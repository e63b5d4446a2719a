"""The one error type the CLI turns into a one-line message and an exit code."""

from __future__ import annotations

from launcher import exitcodes


def one_line(text: str) -> str:
    """`text` on one line: each line break it holds (a command line's, a path's: \\n, \\r, and the others
    str.splitlines() breaks at) shown as the two characters `\\n`, so that what it quotes never splits it."""
    return "\\n".join(text.splitlines())


class LaunchError(Exception):
    """A failure the user can fix; `str()` is the one line shown to them, whatever it quotes (one_line)."""

    exit_code = exitcodes.SOFTWARE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(one_line(message))
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(LaunchError):
    """A bad setting, `.env` file or conda env: exit 78."""

    exit_code = exitcodes.CONFIG
