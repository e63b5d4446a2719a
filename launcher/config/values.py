"""Pure checks of one setting's text for what it will be used for: a path the kernel accepts, a regex that
compiles in bounded time and memory, a number select() and supervisord can hold. Each raises ValueError with
the reason; the caller names the key."""

from __future__ import annotations

import re
from pathlib import Path

# Linux limits (linux/limits.h): NAME_MAX for one path component, PATH_MAX with its terminating NUL.
NAME_MAX = 255
PATH_MAX = 4096
# sockaddr_un.sun_path is 108 bytes with the terminating NUL (unix(7)).
UNIX_PATH_MAX = 107
# Longer patterns are not a log-line rule a person writes; the cap keeps re's compiler (recursive Python)
# far from its limits and the per-line cost small.
REGEX_MAX = 2000
REGEX_DEPTH = 50  # nested groups; re's parser and compiler recurse once per level
_DIGITS = re.compile(r"[0-9]{1,12}")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


def text(raw: str) -> str:
    """Refuses what no file, argv or environment can carry: a NUL byte, bytes that are not UTF-8 (Python's
    surrogateescape turns them into lone surrogates in os.environ)."""
    if "\0" in raw:
        raise ValueError("contains a NUL byte")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    return raw


def printable(raw: str) -> str:
    """Text safe to print: bytes that were not UTF-8 (and lone surrogates) as backslash escapes."""
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(raw: str) -> str:
    if "\n" in raw or "\r" in raw:
        raise ValueError("must not contain a newline")
    return raw


def expand_user(raw: str) -> Path:
    """`~` and `~user` as the shell expands them; an unknown user is a bad value, not a crash (RuntimeError)."""
    try:
        return Path(raw).expanduser()
    except RuntimeError:
        raise ValueError(f"{raw.split('/', 1)[0]!r}: no such user or home directory") from None


def path_fits(path: Path) -> Path:
    """Each component at most NAME_MAX bytes and the whole under PATH_MAX: longer ones fail in every call."""
    encoded = str(path).encode("utf-8", "surrogateescape")
    if len(encoded) >= PATH_MAX:
        raise ValueError(f"path longer than {PATH_MAX - 1} bytes")
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise ValueError(f"a path component is longer than {NAME_MAX} bytes")
    return path


def path(raw: str) -> Path:
    if not raw:
        raise ValueError("must not be empty")
    return path_fits(expand_user(one_line(raw)))


def socket_fits(run_dir: Path, name: str) -> Path:
    socket = run_dir / name
    if len(str(socket).encode("utf-8", "surrogateescape")) > UNIX_PATH_MAX:
        raise ValueError(
            f"too long for a unix socket: {socket} must be at most {UNIX_PATH_MAX} bytes (unix(7)); use a shorter path"
        )
    return run_dir


def whole(raw: str, minimum: int, maximum: int) -> int:
    """ASCII digits only: int() would also take '1_000' and other scripts' digits."""
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ValueError(f"must be a whole number from {minimum} to {maximum}")
    return int(raw)


def seconds(raw: str, maximum: float, *, allow_zero: bool = False) -> float:
    """A positive (or, when allowed, zero) decimal number of seconds up to `maximum` (no nan/inf/1e308:
    timeouts must fit select())."""
    value = float(raw) if _NUMBER.fullmatch(raw) else float("nan")
    if not (value >= 0 if allow_zero else value > 0) or not value <= maximum:  # also refuses NaN
        kind = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        days = f" ({maximum / 86400:g} days)" if maximum >= 86400 else ""
        raise ValueError(f"must be {kind}, at most {maximum:.0f}{days}")
    return value


def regex(raw: str) -> re.Pattern[str]:
    """A log rule: compiled with its size capped, and never one that matches an empty line (it would match
    every line: a restart storm)."""
    if not raw:
        raise ValueError("must not be empty (it would match every line)")
    if len(raw) > REGEX_MAX:
        raise ValueError(f"longer than {REGEX_MAX} characters")
    if group_depth(raw) > REGEX_DEPTH:
        raise ValueError(f"groups nested more than {REGEX_DEPTH} deep")
    try:
        pattern = re.compile(raw)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise ValueError(f"regular expression too large or too deeply nested ({type(exc).__name__})") from None
    if pattern.search("") is not None:
        raise ValueError("matches an empty line, so it would match every line")
    return pattern


def group_depth(raw: str) -> int:
    """How deep a pattern's groups nest, skipping escapes and character classes."""
    depth = deepest = 0
    escaped = in_class = False
    for char in raw:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
    return deepest
