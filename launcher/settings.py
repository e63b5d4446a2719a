"""Settings: one typed object from four layers, lowest first:
built-in defaults < the `.env` file < the process environment < command-line flags.

`.env` keys that are not `HEYGEM_*` settings are the app's own configuration and go into its
environment, as Docker's `env_file` does.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launcher import values as checks
from launcher.errors import ConfigError
from launcher.instances import POLICIES, GpuSelection, parse_gpus
from launcher.masking import mask_value
from launcher.rundir import SOCKET_NAME

PREFIX = "HEYGEM_"
ENV_FILE_KEY = "HEYGEM_ENV_FILE"


def _default_run_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return f"{runtime}/heygem" if runtime else f"/tmp/heygem-{os.getuid()}"


def _path(raw: str) -> Path:
    return checks.path(raw)


def _abs_path(raw: str) -> Path:
    path = _path(raw)
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


def _conda_env(raw: str) -> str:
    if "/" in raw:
        checks.path(raw)  # a prefix path: the same rules as any path (and ~user must exist)
    return checks.one_line(raw)


def _run_dir(raw: str) -> Path:
    # Its socket must fit sockaddr_un: supervisord would fail to bind it long after validation.
    return checks.socket_fits(_abs_path(raw), SOCKET_NAME)


def _command(raw: str) -> tuple[str, ...]:
    # A newline cannot be written into supervisord's config, and shlex would take it as a separator.
    argv = tuple(shlex.split(checks.one_line(raw)))
    if not argv:
        raise ValueError("must not be empty")
    return argv


def _provider(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*ExecutionProvider", raw):
        raise ValueError("must be an ONNX Runtime provider name such as CUDAExecutionProvider")
    return raw


def _path_list(raw: str) -> tuple[str, ...]:
    # Empty pieces are dropped later by the library-path builder, with the rest of its rules.
    pieces = tuple(checks.one_line(raw).split(":")) if raw else ()
    for piece in pieces:
        if piece:
            checks.path_fits(Path(piece))
    return pieces


LINE_MAX_MIN = 4096
# 30 days: longer is no timeout a person means, and every timeout must fit select() and threading.
MAX_SECONDS = 30 * 86400.0


def _positive_seconds(raw: str) -> float:
    return checks.seconds(raw, MAX_SECONDS)


def _non_negative_seconds(raw: str) -> float:
    return checks.seconds(raw, MAX_SECONDS, allow_zero=True)


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _count(raw: str) -> int:
    return checks.whole(raw, 0, 1_000_000)


def _optional_path(raw: str) -> Path | None:
    return checks.path(raw) if raw else None


def _port(raw: str) -> int | None:
    if not raw:
        return None
    try:
        return checks.whole(raw, 1, 65535)
    except ValueError:
        raise ValueError("must be a TCP port number (1-65535)") from None


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in allowed:
            raise ValueError("must be one of: " + ", ".join(allowed))
        return raw.lower()

    return parse


def _regex(raw: str) -> re.Pattern[str]:
    return checks.regex(raw)


def _markers(raw: str) -> tuple[str, ...]:
    # A marker is matched within one line: one with a newline could never be seen.
    markers = tuple(m for m in checks.one_line(raw).split("|") if m)
    if not markers:
        raise ValueError("must name at least one marker")
    return markers


def _whole_seconds(raw: str) -> int:
    # supervisord's stopwaitsecs is an integer; an hour is already far beyond any orchestrator's grace.
    return checks.whole(raw, 1, 3600)


def _line_max(raw: str) -> int:
    # Below a HeyGem record's length every marker and rule would be cut away: nothing would ever match.
    size = _size(raw)
    if size < LINE_MAX_MIN:
        raise ValueError(f"must be at least {LINE_MAX_MIN // 1024}KB (a line is cut there, before any rule sees it)")
    return size


def _size(raw: str) -> int:
    """Bytes, with an optional KB/MB/GB suffix as supervisord writes them."""
    units = {"": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
    match = re.fullmatch(r"([0-9]{1,13})\s*([KMG]B)?", raw.upper())
    if not match or int(match.group(1)) * units[match.group(2) or ""] > 2**40:
        raise ValueError("must be a size such as 10MB, at most 1024GB")
    return int(match.group(1)) * units[match.group(2) or ""]


@dataclass(frozen=True)
class Spec:
    key: str
    attr: str
    parse: Callable[[str], object]
    default: Callable[[], str]
    help: str


SPECS: tuple[Spec, ...] = (
    Spec("HEYGEM_CONDA_ROOT", "conda_root", _abs_path, lambda: "/opt/conda", "conda installation root"),
    Spec(
        "HEYGEM_CONDA_ENV",
        "conda_env",
        _conda_env,
        lambda: "",
        "env name under CONDA_ROOT/envs, a prefix path, or empty for the launcher's own interpreter",
    ),
    Spec("HEYGEM_APP_DIR", "app_dir", _path, lambda: ".", "the app's working directory"),
    Spec("HEYGEM_APP_COMMAND", "app_command", _command, lambda: "python app.py", "the app's command line"),
    Spec(
        "HEYGEM_REQUIRE_PROVIDER",
        "require_provider",
        _provider,
        lambda: "CUDAExecutionProvider",
        "the ONNX Runtime provider the probe must run on",
    ),
    Spec(
        "HEYGEM_EXTRA_LIBRARY_PATH",
        "extra_library_path",
        _path_list,
        lambda: "",
        "extra library folders, colon-separated, before the inherited LD_LIBRARY_PATH",
    ),
    Spec(
        "HEYGEM_PREFLIGHT_TIMEOUT",
        "preflight_timeout",
        _positive_seconds,
        lambda: "90",
        "seconds before a hung probe is killed",
    ),
    Spec("HEYGEM_RUN_DIR", "run_dir", _run_dir, _default_run_dir, "private folder for sockets and logs"),
    # Under Docker's 10 s, so the app's own group is stopped (and killed if need be) before Docker's SIGKILL.
    Spec(
        "HEYGEM_STOP_GRACE",
        "stop_grace",
        _whole_seconds,
        lambda: "8",
        "seconds between SIGTERM and SIGKILL when the app is stopped",
    ),
    # One setting for supervisord's stopasgroup and killasgroup: it refuses to stop as a group but kill alone.
    Spec(
        "HEYGEM_STOP_AS_GROUP",
        "stop_as_group",
        _bool,
        lambda: "true",
        "signal the app's whole process group on stop, SIGKILL included (its workers hold GPU memory)",
    ),
    Spec(
        "HEYGEM_START_SECONDS",
        "start_seconds",
        _count,
        lambda: "5",
        "seconds the app must stay up for a start to count as successful",
    ),
    Spec(
        "HEYGEM_START_RETRIES",
        "start_retries",
        _count,
        lambda: "3",
        "quick failures in a row before the app is given up on (exit 70)",
    ),
    Spec(
        "HEYGEM_MAX_RESTARTS",
        "max_restarts",
        _count,
        lambda: "5",
        "restarts allowed within HEYGEM_RESTART_WINDOW before giving up (exit 70)",
    ),
    Spec(
        "HEYGEM_RESTART_WINDOW",
        "restart_window",
        _positive_seconds,
        lambda: "300",
        "the window, in seconds, for HEYGEM_MAX_RESTARTS",
    ),
    Spec(
        "HEYGEM_LOG_MAX_BYTES",
        "log_max_bytes",
        _size,
        lambda: "10MB",
        "size at which the app's log in the run dir is rotated",
    ),
    Spec(
        "HEYGEM_RESTART_TIMEOUT",
        "restart_timeout",
        _positive_seconds,
        lambda: "180",
        "seconds a restarted app has to become ready before the previous one is brought back (exit 69)",
    ),
    Spec("HEYGEM_LOG_BACKUPS", "log_backups", _count, lambda: "3", "rotated copies of the app's log kept"),
    Spec(
        "HEYGEM_APP_LOG",
        "app_log",
        _optional_path,
        lambda: "",
        "the app's log file to watch (default APP_DIR/log/dh.log; relative to APP_DIR)",
    ),
    Spec(
        "HEYGEM_APP_PORT",
        "app_port",
        _port,
        lambda: "",
        "the app's HTTP port, handed to it as GRADIO_SERVER_PORT (default: GRADIO_SERVER_PORT, else 7860)",
    ),
    Spec(
        "HEYGEM_GPUS",
        "gpus",
        parse_gpus,
        lambda: "",
        "one app per GPU: all, a count, or a comma-separated list of GPU indices or UUIDs; each app gets its GPU "
        "as CUDA_VISIBLE_DEVICES and port HEYGEM_APP_PORT + i (default: one app, not pinned)",
    ),
    Spec(
        "HEYGEM_GPU_POLICY",
        "gpu_policy",
        _choice(*POLICIES),
        lambda: "all",
        "with HEYGEM_GPUS: all: refuse to start unless every GPU passes the preflight; any: start the apps whose "
        "GPU passed and report the others",
    ),
    Spec(
        "HEYGEM_METRICS_PORT",
        "metrics_port",
        _port,
        lambda: "",
        "TCP port for Prometheus metrics from the launcher's process (read-only; off when empty)",
    ),
    Spec(
        "HEYGEM_PREFLIGHT",
        "preflight",
        _choice("run", "skip"),
        lambda: "run",
        "skip: start without the preflight (logged loudly); the runtime CPU-fallback guard still applies",
    ),
    Spec(
        "HEYGEM_STALL_SECONDS",
        "stall_seconds",
        _positive_seconds,
        lambda: "20",
        "a task whose frames make no progress for this long is a stall (snapshot, restart); a failed task that "
        "has not ended this long after its failure line has hung (restart)",
    ),
    # The final ffmpeg re-encode writes no line until the task's end: 19 s for 150 frames, 95 s for 1,500 on
    # HeyGem's reference run (FIELD.md section 2). Its allowance grows with the frames the task produced.
    Spec(
        "HEYGEM_ENCODE_SECONDS",
        "encode_seconds",
        _positive_seconds,
        lambda: "60",
        "the final encode's allowance: this many seconds plus HEYGEM_ENCODE_SECONDS_PER_FRAME per frame",
    ),
    Spec(
        "HEYGEM_ENCODE_SECONDS_PER_FRAME",
        "encode_seconds_per_frame",
        _non_negative_seconds,
        lambda: "0.25",
        "seconds of final-encode allowance per frame of the task",
    ),
    Spec(
        "HEYGEM_LINE_MAX",
        "line_max",
        _line_max,
        lambda: "64KB",
        "longest line of the app's output or log kept whole; longer ones are cut and marked",
    ),
    Spec(
        "HEYGEM_GPU_GRACE",
        "gpu_grace",
        _positive_seconds,
        lambda: "60",
        "seconds after the app is ready by which every process of it that loaded ONNX Runtime must have "
        "loaded its CUDA provider",
    ),
    Spec(
        "HEYGEM_ON_CPU_FALLBACK",
        "on_cpu_fallback",
        _choice("stop", "warn"),
        lambda: "stop",
        "stop: stop the app and exit 69 when it falls back to the CPU at run time; warn: only warn",
    ),
    Spec(
        "HEYGEM_READY_MARKERS",
        "ready_markers",
        _markers,
        lambda: ">>> init_wh_process进程启动|>>> 数字人图片处理进程启动",
        "log messages, separated by |, that must all have been logged before the app is ready (HeyGem's two "
        "workers, once their models are loaded)",
    ),
    # The patterns below are matched against the *message* of HeyGem's own log records, never against a whole
    # line: user text (file names, task codes) appears in INFO messages, after HeyGem's own prefix.
    Spec(
        "HEYGEM_PATTERN_BLOCKED",
        "pattern_blocked",
        _regex,
        lambda: r"^\[[^\]]+\]任务视频驱动队列满",
        "regex on ERROR messages: the task's video driving queue is blocked (snapshot, restart)",
    ),
    Spec(
        "HEYGEM_PATTERN_FAILURE",
        "pattern_failure",
        _regex,
        lambda: (
            r"^\[[^\]]+\](?:任务执行失败|预处理失败|音频特征提取失败|任务视频驱动队列异常|init_wh exception)"
            r"|^Custom VideoWriter \[[^\]]+\](?:任务视频帧队列 -> 异常原因|视频帧队列处理异常结束)"
            r"|^处理视频时发生错误"
        ),
        "regex on ERROR messages: a task failed (snapshot; restart only if it does not end)",
    ),
    Spec(
        "HEYGEM_PATTERN_TASK_START",
        "pattern_task_start",
        _regex,
        lambda: r"^任务:\S+ -> audio_url:",
        "regex on messages: a task starts",
    ),
    Spec(
        "HEYGEM_PATTERN_FRAMES_START",
        "pattern_frames_start",
        _regex,
        lambda: r"^\[[^\]]+\]任务视频驱动队列启动 batch_size:\d+",
        "regex on messages: the task's frame loop starts (the stall clock runs from here)",
    ),
    Spec(
        "HEYGEM_PATTERN_PROGRESS",
        "pattern_progress",
        _regex,
        lambda: r"^drivered_video >+ 发送数据大小:",
        "regex on messages: the frame producer sent a batch (progress, no frames counted)",
    ),
    Spec(
        "HEYGEM_PATTERN_FRAMES",
        "pattern_frames",
        _regex,
        lambda: r"^audio_transfer >+ 发送完成数据大小:(\d+), frameId:\d+",
        "regex on messages: frames done; its first group is how many (frames are counted from these only)",
    ),
    Spec(
        "HEYGEM_PATTERN_FRAMES_DONE",
        "pattern_frames_done",
        _regex,
        lambda: (
            r"^\[[^\]]+\]任务数字人图片处理已完成|^Custom VideoWriter \[[^\]]+\]视频帧队列处理已结束|^Custom command:"
        ),
        "regex on messages: the frames are done and the final encode runs (the encode allowance applies)",
    ),
    Spec(
        "HEYGEM_PATTERN_TASK_END",
        "pattern_task_end",
        _regex,
        lambda: r"^>>> 任务:\S+ 耗时:",
        "regex on messages: a task ended, successfully or not (HeyGem logs it in a finally)",
    ),
    Spec(
        "HEYGEM_PATTERN_FALLBACK",
        "pattern_fallback",
        _regex,
        lambda: (
            r"^\d{4}-\S+ \S+ \[[EW]:onnxruntime:[^\]]*\] .*(?:Failed to load library \S*libonnxruntime_providers_cuda"
            r"|Failed to create CUDAExecutionProvider)"
            r"|^EP Error |^Falling back to \['CPUExecutionProvider'\]"
            r"|^\S+:\d+: UserWarning: Specified provider 'CUDAExecutionProvider' is not in available provider names"
        ),
        "regex on the app's other lines (ONNX Runtime's log, print output): ONNX Runtime fell back to the CPU",
    ),
)
KNOWN_KEYS = frozenset({s.key for s in SPECS} | {ENV_FILE_KEY})


@dataclass(frozen=True)
class Settings:
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
    restart_timeout: float
    log_max_bytes: int
    log_backups: int
    app_log: Path  # resolved against app_dir by build_settings
    app_port: int | None
    gpus: GpuSelection | None
    gpu_policy: str
    metrics_port: int | None
    preflight: str
    stall_seconds: float
    encode_seconds: float
    encode_seconds_per_frame: float
    line_max: int
    gpu_grace: float
    on_cpu_fallback: str
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
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(ENV_FILE_MAX + 1)
    if len(data) > ENV_FILE_MAX:
        raise ConfigError(f"{path}: env file larger than {ENV_FILE_MAX} bytes")
    return data


def read_env_file(path: Path) -> dict[str, str | None]:
    """The file's bindings, without touching os.environ. A line that does not parse, a NUL byte or bytes
    that are not UTF-8 are config errors naming the file, the line and the key, never the value (a secret's
    closing quote may be what is missing)."""
    # Imported only when there is a file to read: start-up time is on the preflight's critical path.
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    text = _read_env_bytes(path).decode("utf-8", "surrogateescape")
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path}:{binding.original.line}"
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
    # interpolate=False: values are literal, as with `docker run --env-file`; a secret may hold a `$`.
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


# What execve() and a JSON environment file can carry as a name (POSIX allows more than shells do).
_ENV_KEY = re.compile(r"[^=\s]+")


def _printable_key(key: str) -> str:
    return repr(checks.printable(key)[:60])


def run_dir_value(raw: str | None) -> Path:
    """HEYGEM_RUN_DIR alone (the client side needs nothing else): its default when None; ConfigError if bad."""
    raw = _default_run_dir() if raw is None else raw
    try:
        return _run_dir(checks.text(raw).strip())
    except ValueError as exc:
        raise ConfigError(f"HEYGEM_RUN_DIR={_shown('HEYGEM_RUN_DIR', raw)}: {exc}") from None


def find_env_file(flag: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    for source, raw in (("flag", flag), ("environment", environ.get(ENV_FILE_KEY))):
        if raw:
            try:
                return checks.path(checks.text(raw))
            except ValueError as exc:
                raise ConfigError(f"{ENV_FILE_KEY}={_shown(ENV_FILE_KEY, raw)} (from {source}): {exc}") from None
    default = cwd / ".env"
    return default if default.is_file() else None


def _shown(key: str, raw: str) -> str:
    """A bad value as printed in an error: masked when secret, cut short, non-UTF-8 bytes escaped."""
    shown = repr(mask_value(key, checks.printable(raw)))
    return shown if len(shown) <= 80 else shown[:77] + "..."


def closest_key(key: str) -> str | None:
    import difflib  # only on the rare unknown key

    matches = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.6)
    return matches[0] if matches else None


def build_settings(
    dotenv: Mapping[str, str | None],
    environ: Mapping[str, str],
    flags: Mapping[str, str | None],
    *,
    env_file: Path | None = None,
    cwd: Path,
) -> Settings:
    """Pure: merge the layers, parse each value, and split off the app's own `.env` keys."""
    warnings: list[str] = []
    for origin, layer in (("the .env file", dotenv), ("the environment", environ)):
        for key in layer:
            if key.startswith(PREFIX) and key not in KNOWN_KEYS:
                hint = closest_key(key)
                warnings.append(f"unknown setting {key} in {origin}" + (f"; did you mean {hint}?" if hint else ""))

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
    flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """Read the `.env` file the layers point at, then build and check the settings."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    env_file = find_env_file(flags.get(ENV_FILE_KEY), environ, cwd)
    dotenv = read_env_file(env_file) if env_file else {}
    settings = build_settings(dotenv, environ, flags, env_file=env_file, cwd=cwd)
    check_paths(settings)
    return settings


def check_paths(settings: Settings) -> None:
    """What only the disk can tell: the app dir is a folder, the app's log (if it exists) a regular file
    (a folder, a FIFO that would block the reader, or /dev/zero are refused)."""
    if not settings.app_dir.is_dir():
        raise ConfigError(f"HEYGEM_APP_DIR={str(settings.app_dir)!r}: not a directory")
    try:
        mode = os.stat(settings.app_log).st_mode
    except FileNotFoundError:
        return  # HeyGem creates it at start
    except OSError as exc:
        raise ConfigError(f"HEYGEM_APP_LOG={str(settings.app_log)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"HEYGEM_APP_LOG={str(settings.app_log)!r}: not a regular file")
