"""Settings: one typed object from four layers, lowest first:
built-in defaults < the `.env` file < the process environment < command-line flags.

`.env` keys that are not `HEYGEM_*` settings are the app's own configuration and go into its
environment, as Docker's `env_file` does.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launcher.config import values as checks
from launcher.config.instances import GpuSelection
from launcher.config.masking import mask_value
from launcher.config.specs import ENV_FILE_KEY, PREFIX, SPECS, default_run_dir, parse_run_dir
from launcher.errors import ConfigError
from launcher.system.special import unreadable

KNOWN_KEYS = frozenset({s.key for s in SPECS} | {ENV_FILE_KEY})
# Names of this project's that are not settings: in the environment they are no typo (a shell that also runs
# docker compose holds them); in the .env file they have no effect there, which the warning says.
NOT_SETTINGS = {
    "HEYGEM_DEBUG": "it is read from the environment only (an internal error's traceback)",
    "HEYGEM_IMAGE": "it is docker/compose*.yml's variable (the image), not a setting",
    "HEYGEM_PORT": "it is docker/compose*.yml's variable (the published port); the app's port is HEYGEM_APP_PORT",
    "HEYGEM_CONFIG_DIR": "it is docker/compose*.yml's variable (the config folder), not a setting",
    "HEYGEM_DATA_DIR": "it is docker/compose.gen-video.yml's variable (the data folder), not a setting",
    "HEYGEM_BUILD_ENGINE": "it is scripts/build-image.sh's variable, not a setting",
    "HEYGEM_TEST_CACHE": "it is the tests' variable, not a setting",
}


@dataclass(frozen=True)
class Settings:
    """The launcher's settings, typed and checked (`load_settings`: defaults < .env < environment < flags).

    A docstring of its own also spares `dataclass` computing one from the signature (~1 ms at each start)."""

    conda_root: Path
    conda_env: str
    app_dir: Path
    app_command: tuple[str, ...]
    require_provider: str
    extra_library_path: tuple[str, ...]
    preflight_timeout: float
    run_dir: Path
    # Every field above env_file comes from SPECS, which holds its default: none is repeated here.
    stop_grace: int
    stop_as_group: bool
    start_seconds: int
    start_retries: int
    max_restarts: int
    restart_window: float
    restart_delay: float
    restart_delay_max: float
    restart_reset: float
    restart_timeout: float
    log_max_bytes: int
    log_backups: int
    app_log: Path  # resolved against app_dir by build_settings
    app_port: int | None
    gpus: GpuSelection | None
    gpu_policy: str
    gpu_memory_min_mib: int | None
    metrics_port: int | None
    metrics_address: str
    gpu_watch: bool
    termination_log: Path | None
    preflight: str
    stall_seconds: float
    encode_seconds: float
    encode_seconds_per_frame: float
    prepare_seconds: float
    task_seconds: float
    task_seconds_per_audio_second: float
    worker_restart_window: float
    line_max: int
    gpu_grace: float
    on_cpu_fallback: str
    session_audit: bool
    ready_markers: tuple[str, ...]
    pattern_blocked: re.Pattern[str]
    pattern_failure: re.Pattern[str]
    pattern_task_start: re.Pattern[str]
    pattern_frames_start: re.Pattern[str]
    pattern_progress: re.Pattern[str]
    pattern_frames: re.Pattern[str]
    pattern_frames_done: re.Pattern[str]
    pattern_task_end: re.Pattern[str]
    pattern_fallback: re.Pattern[str]
    env_file: Path | None = None
    # The app's own keys from `.env` (not HEYGEM_*), in file order.
    app_env: Mapping[str, str] = field(default_factory=dict)
    # Where each setting's value came from: default, .env, environment or flag.
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # Each setting's text as given, before parsing: what the service saves to rebuild its settings.
    raw: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        """The settings as `HEYGEM_*` keys with printable checks."""
        out: dict[str, str] = {}
        for spec in SPECS:
            value = getattr(self, spec.attr)
            if isinstance(value, re.Pattern):
                value = value.pattern
            elif value is None:
                value = ""
            elif isinstance(value, tuple):
                value = {"app_command": " ", "ready_markers": "|"}.get(spec.attr, ":").join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[spec.key] = mask_value(spec.key, str(value))
        out[ENV_FILE_KEY] = str(self.env_file) if self.env_file else ""
        return out


ENV_FILE_MAX = 2**20  # a .env file is a few lines; /dev/zero or a runaway file must not fill memory
_LINE_KEY = re.compile(r"\s*(?:export\s+)?([^\s=#'\"]+)\s*=")


def _read_env_bytes(path: Path) -> bytes:
    """A regular file's bytes; O_NONBLOCK so that a FIFO never blocks the open, and a size cap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{path}: env file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file: {exc.strerror}") from None
    # fstat before fdopen: a folder opens (O_RDONLY), and fdopen() of it raises IsADirectoryError.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: env file is not a regular file")
    why = unreadable(fd)
    if why:
        os.close(fd)
        raise ConfigError(f"{path}: env file is {why}" if why.startswith("a ") else f"{path}: env file {why}")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(ENV_FILE_MAX + 1)
        except OSError as exc:  # a mount that fails later reads
            raise ConfigError(f"{path}: cannot read env file: {exc.strerror}") from None
    if len(data) > ENV_FILE_MAX:
        raise ConfigError(f"{path}: env file larger than {ENV_FILE_MAX} bytes")
    return data


def read_env_file(path: Path) -> dict[str, str | None]:
    """The file's bindings, without touching os.environ; ConfigError as `read_env_file_noted`."""
    return read_env_file_noted(path)[0]


def read_env_file_noted(path: Path) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """The file's bindings, without touching os.environ, and a warning for each key bound again (the last
    binding counts, as with `docker run --env-file`; the line numbers name both, never a value). A line that
    does not parse, a NUL byte or bytes that are not UTF-8 are config errors naming the file, the line and the
    key, never the value (a secret's closing quote may be what is missing)."""
    # Imported only when there is a file to read: start-up time is on the preflight's critical path.
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    text = _read_env_bytes(path).decode("utf-8", "surrogateescape")
    first_line: dict[str, int] = {}
    notes: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        line = _line_of(binding.original.line, binding.original.string)
        where = f"{path}:{line}"
        if binding.error:
            key = _LINE_KEY.match(binding.original.string)
            named = f" (key {_printable_key(key.group(1))})" if key else ""
            quoted = any(q in binding.original.string for q in "'\"")
            hint = "; is a quote left open?" if quoted else "; a line is KEY=VALUE"
            raise ConfigError(f"{where}: cannot parse the line{named}{hint}")
        if binding.key is None:
            continue
        try:
            checks.text(binding.key)
        except ValueError as exc:
            raise ConfigError(f"{where}: the key {exc}") from None
        if not _ENV_KEY.fullmatch(binding.key):
            raise ConfigError(f"{where}: {_printable_key(binding.key)} is not a variable name")
        try:
            checks.text(binding.value or "")
        except ValueError as exc:
            raise ConfigError(f"{where}: the value of {binding.key} {exc}") from None
        first = first_line.setdefault(binding.key, line)
        if first != line:
            # A bare line's "key" may be a pasted token: only a variable name is shown.
            named = binding.key if _IDENTIFIER.fullmatch(binding.key) else "the same entry"
            notes.append(f"{where}: {named} is set again (first on line {first}); the last one counts")
    # interpolate=False: values are literal, as with `docker run --env-file`; a secret may hold a `$`.
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False)), tuple(notes)


# What execve() and a JSON environment file can carry as a name (POSIX allows more than shells do).
_ENV_KEY = re.compile(r"[^=\s]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# python-dotenv's line breaks (its parser's `_newline`), a lone CR included.
_NEWLINE = re.compile(r"\r\n|\n|\r")


def _line_of(line: int, original: str) -> int:
    """The line a python-dotenv binding is on: its `Original.line` is where the blank lines before it begin
    (python-dotenv 1.x sets the mark before skipping them), so those are counted on."""
    blank = original[: len(original) - len(original.lstrip())]
    return line + len(_NEWLINE.findall(blank))


def _printable_key(key: str) -> str:
    return repr(checks.printable(key)[:60])


def run_dir_value(raw: str | None) -> Path:
    """HEYGEM_RUN_DIR alone (the client side needs nothing else): its default when None; ConfigError if bad."""
    raw = default_run_dir() if raw is None else raw
    try:
        return parse_run_dir(checks.text(raw).strip())
    except ValueError as exc:
        raise ConfigError(f"HEYGEM_RUN_DIR={_shown('HEYGEM_RUN_DIR', raw)}: {exc}") from None


def find_env_file(flag: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    for source, raw in (("flag", flag), ("environment", environ.get(ENV_FILE_KEY))):
        if raw:
            try:
                return checks.path(checks.text(raw))
            except ValueError as exc:
                raise ConfigError(f"{ENV_FILE_KEY}={_shown(ENV_FILE_KEY, raw)} (from {source}): {exc}") from None
    # ./.env when present: a folder of that name is not one (some images have it), but anything else is,
    # so that a FIFO or a link to /dev/zero there is refused with its name rather than silently skipped.
    default = cwd / ".env"
    return default if default.exists() and not default.is_dir() else None


def _shown(key: str, raw: str) -> str:
    """A bad value as printed in an error: masked when secret, cut short, non-UTF-8 bytes escaped."""
    shown = repr(mask_value(key, checks.printable(raw)))
    return shown if len(shown) <= 80 else shown[:77] + "..."


def closest_key(key: str) -> str | None:
    """The known setting `key` is most likely a typo of, or None. Judged on what follows HEYGEM_: the prefix
    every key shares made any short name "close" to some setting (HEYGEM_X -> HEYGEM_GPUS)."""
    import difflib  # only on the rare unknown key

    names = {known.removeprefix(PREFIX): known for known in KNOWN_KEYS}
    typed = key.removeprefix(PREFIX)
    close = difflib.get_close_matches(typed, sorted(names), n=1, cutoff=0.8)  # a letter or two off: HEYGEM_GPU
    started = [name for name in names if name.startswith(typed)] if len(typed) >= 3 else []
    if not close and started:  # a name cut short (HEYGEM_STALL): the one it begins; none if several (HEYGEM_APP)
        return names[started[0]] if len(started) == 1 else None
    matches = close or difflib.get_close_matches(typed, sorted(names), n=1, cutoff=0.6)
    return names[matches[0]] if matches else None


def unknown_key_warnings(dotenv: Mapping[str, str | None], environ: Mapping[str, str]) -> list[str]:
    """Pure: a warning for each HEYGEM_ key that is no setting, with the setting it most likely means."""
    warnings = []
    for origin, layer in (("the .env file", dotenv), ("the environment", environ)):
        for key in layer:
            if not key.startswith(PREFIX) or key in KNOWN_KEYS or (key in NOT_SETTINGS and layer is environ):
                continue
            if key in NOT_SETTINGS:
                warnings.append(f"{key} in {origin} has no effect: {NOT_SETTINGS[key]}")
                continue
            hint = closest_key(key)
            warnings.append(f"unknown setting {key} in {origin}" + (f"; did you mean {hint}?" if hint else ""))
    return warnings


def build_settings(
    dotenv: Mapping[str, str | None],
    environ: Mapping[str, str],
    flags: Mapping[str, str | None],
    *,
    env_file: Path | None = None,
    cwd: Path,
    notes: tuple[str, ...] = (),
) -> Settings:
    """Pure: merge the layers, parse each value, and split off the app's own `.env` keys. `notes`: warnings
    found while reading the layers (a `.env` key bound twice), kept first among the settings' warnings."""
    warnings = [*notes, *unknown_key_warnings(dotenv, environ)]

    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    raw_values: dict[str, str] = {}
    for spec in SPECS:
        raw, source = spec.default(), "default"
        for name, layer in ((".env", dotenv), ("environment", environ), ("flag", flags)):
            candidate = layer.get(spec.key)
            if candidate is not None:
                raw, source = candidate, name
        try:
            values[spec.attr] = spec.parse(checks.text(raw).strip())
        except (ValueError, OverflowError, RecursionError) as exc:
            where = "" if source in ("default", "flag") else f" (from {source})"
            raise ConfigError(f"{spec.key}={_shown(spec.key, raw)}{where}: {exc}") from None
        sources[spec.key] = source
        raw_values[spec.key] = raw

    app_dir = values["app_dir"]
    assert isinstance(app_dir, Path)
    values["app_dir"] = app_dir = app_dir if app_dir.is_absolute() else cwd / app_dir
    app_log = values["app_log"] or Path("log/dh.log")  # the setting may be empty: HeyGem's own place
    assert isinstance(app_log, Path)
    values["app_log"] = app_log if app_log.is_absolute() else app_dir / app_log

    app_env: dict[str, str] = {}
    for key, value in dotenv.items():
        if key.startswith(PREFIX):
            continue
        if value is None:  # a bare `KEY` line passes the launcher's own value through, as Docker does
            if key in environ:
                app_env[key] = environ[key]
            continue
        app_env[key] = value

    return Settings(
        **values,
        env_file=env_file,
        app_env=app_env,
        sources=sources,  # type: ignore[arg-type]
        warnings=tuple(warnings),
        raw=raw_values,
    )


def load_settings(
    flags: Mapping[str, str | None],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    check_disk: bool = True,
) -> Settings:
    """Read the `.env` file the layers point at, then build and check the settings; ConfigError (78) naming
    the key (and file and line) when one is bad. `check_disk`: also the app's folder and log on this machine
    (`check_paths`); not for `replay`, which reads a recorded log with the settings of the app's machine."""
    environ = os.environ if environ is None else environ
    if cwd is None:
        try:
            cwd = Path.cwd()
        except FileNotFoundError:
            raise ConfigError(
                "the current directory no longer exists: start heygem-launch from an existing folder"
            ) from None
    env_file = find_env_file(flags.get(ENV_FILE_KEY), environ, cwd)
    dotenv, notes = read_env_file_noted(env_file) if env_file else ({}, ())
    settings = build_settings(dotenv, environ, flags, env_file=env_file, cwd=cwd, notes=notes)
    if check_disk:
        check_paths(settings)
    return settings


def check_paths(settings: Settings) -> None:
    """What only the disk can tell: the app dir is a folder, the app's log (if it exists) a regular file
    (a folder, a FIFO that would block the reader, or /dev/zero are refused)."""
    if not settings.app_dir.is_dir():
        raise ConfigError(f"HEYGEM_APP_DIR={str(settings.app_dir)!r}: not a directory")
    where = f"HEYGEM_APP_LOG={str(settings.app_log)!r}"
    try:
        fd = os.open(settings.app_log, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return  # HeyGem creates it at start
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    try:
        why = "not a regular file" if not stat.S_ISREG(os.fstat(fd).st_mode) else unreadable(fd)
    finally:
        os.close(fd)
    if why:
        raise ConfigError(f"{where}: {why}")
