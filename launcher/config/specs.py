"""The settings' table: every `HEYGEM_*` key with its attribute, its parser (text in, typed value out, ValueError
with the reason), its default and its help; `settings.py` loads the layers through it, and `--help` lists it."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.config import values as checks
from launcher.config.instances import POLICIES, parse_gpus
from launcher.system.rundir import SOCKET_NAME

PREFIX = "HEYGEM_"
ENV_FILE_KEY = "HEYGEM_ENV_FILE"


def default_run_dir() -> str:
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


def parse_run_dir(raw: str) -> Path:
    # Its socket must fit sockaddr_un: supervisord would fail to bind it long after validation.
    if "%" in raw:
        # supervisord expands '%' in some values twice (the app's log name among them): no escaping holds.
        raise ValueError("must not contain '%' (supervisord expands it in its config)")
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
# Each followed stream (the app's output, its log) holds up to one line of this size while it is incomplete:
# beyond 16MB a setting meant as a line length would let one endless line take the container's memory.
LINE_MAX_MAX = 16 * 2**20
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
    raise ValueError("must be on or off (or true/false, yes/no, 1/0)")


def _count(raw: str) -> int:
    return checks.whole(raw, 0, 1_000_000)


def _optional_path(raw: str) -> Path | None:
    return checks.path(raw) if raw else None


def _kernel_file(path: Path) -> bool:
    """A /proc or /sys file (stat() calls them regular): /proc/self/mem answers a write with EIO."""
    from launcher.system.special import PSEUDO, filesystem_of

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False  # unreadable to us is no kernel interface; writing it is judged when it happens
    try:
        return filesystem_of(fd) in PSEUDO
    finally:
        os.close(fd)


def _message_file(raw: str) -> Path | None:
    """A file to write one line into: a regular file, or a new one in an existing folder (not a folder, a
    device such as /dev/full, a FIFO): a message that cannot be written is a cause lost at the worst moment."""
    path = _optional_path(raw)
    if path is None:
        return None
    if path.exists() and (not path.is_file() or _kernel_file(path)):
        raise ValueError("must be a regular file (or a new one in an existing folder)")
    if not path.exists() and not path.parent.is_dir():
        raise ValueError(f"its folder {path.parent} does not exist")
    return path


def _port(raw: str) -> int | None:
    if not raw:
        return None
    try:
        return checks.whole(raw, 1, 65535)
    except ValueError:
        raise ValueError("must be a TCP port number (1-65535)") from None


def _address(raw: str) -> str:
    import ipaddress  # only when the setting is read

    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise ValueError("must be an IP address to bind (0.0.0.0: every IPv4 interface; :: every interface)") from None


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
    if size > LINE_MAX_MAX:
        raise ValueError(f"must be at most {LINE_MAX_MAX // 2**20}MB (a line up to this size is held in memory)")
    return size


LOG_MAX_MIN = 2**20


def _log_size(raw: str) -> int:
    # The watchdog reads the app's stderr through supervisord's capture, which rotates at this size: a file
    # smaller than what the app writes between two reads (~0.1 s; ~100 KB at 2,000 records/s, far above
    # HeyGem's rate) would be rotated away unread, and an incident's line with it.
    size = _size(raw)
    if 0 < size < LOG_MAX_MIN:  # 0: never rotated, nothing lost
        raise ValueError(
            "must be at least 1MB, or 0 (never rotated): a smaller capture rotates lines away before the "
            "watchdog reads them"
        )
    return size


def _size(raw: str) -> int:
    """Bytes, with an optional KB/MB/GB suffix as supervisord writes them."""
    units = {"": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
    match = re.fullmatch(r"([0-9]{1,13})\s*([KMG]B)?", raw.upper())
    if not match or int(match.group(1)) * units[match.group(2) or ""] > 2**40:
        raise ValueError("must be a size such as 10MB, at most 1024GB")
    return int(match.group(1)) * units[match.group(2) or ""]


def _memory_mib(raw: str) -> int | None:
    """HEYGEM_GPU_MEMORY_MIN: a size (10GB, 512MB) in whole MiB; None when empty (not set)."""
    if not raw:
        return None
    size = _size(raw)
    if size < 2**20:
        raise ValueError("must be a size of at least 1MB, such as 6GB")
    return size // 2**20


@dataclass(frozen=True)
class Spec:
    """One `HEYGEM_*` setting: its key, its attribute, its parser, its default and its help."""

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
    Spec("HEYGEM_RUN_DIR", "run_dir", parse_run_dir, default_run_dir, "private folder for sockets and logs"),
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
        "HEYGEM_RESTART_DELAY",
        "restart_delay",
        _non_negative_seconds,
        lambda: "1",
        "seconds before an app that crashed (or had an incident) is started again; doubles at each restart; 0: at once",
    ),
    Spec(
        "HEYGEM_RESTART_DELAY_MAX",
        "restart_delay_max",
        _non_negative_seconds,
        lambda: "60",
        "the cap, in seconds, of the doubling HEYGEM_RESTART_DELAY",
    ),
    Spec(
        "HEYGEM_RESTART_RESET",
        "restart_reset",
        _positive_seconds,
        lambda: "120",
        "seconds an app must run before its next restart waits HEYGEM_RESTART_DELAY again",
    ),
    Spec(
        "HEYGEM_LOG_MAX_BYTES",
        "log_max_bytes",
        _log_size,
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
        "HEYGEM_GPU_MEMORY_MIN",
        "gpu_memory_min_mib",
        _memory_mib,
        lambda: "",
        "free GPU memory the app needs (e.g. 6GB): the preflight refuses a GPU with less; empty: it warns below 2GB",
    ),
    Spec(
        "HEYGEM_METRICS_PORT",
        "metrics_port",
        _port,
        lambda: "",
        "TCP port for Prometheus metrics from the launcher's process (read-only; off when empty)",
    ),
    Spec(
        "HEYGEM_METRICS_ADDRESS",
        "metrics_address",
        _address,
        lambda: "0.0.0.0",
        "the address the metrics port is bound to: every IPv4 interface by default (a container's published "
        "port reaches it); 127.0.0.1 keeps it to the host, :: every interface with IPv6",
    ),
    Spec(
        "HEYGEM_GPU_WATCH",
        "gpu_watch",
        _bool,
        lambda: "on",
        "watch NVML's XID events and a lost GPU while the apps run (on/off)",
    ),
    Spec(
        "HEYGEM_TERMINATION_LOG",
        "termination_log",
        _message_file,
        lambda: "",
        "file for the one-line cause of an exit that is not a clean stop (empty: /dev/termination-log when it exists)",
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
    # A task stuck before its frames (ffmpeg, audio features, init_wh; B: the downloads) had no rule and waited
    # for HeyGem's own 600-s timeout. Preparation took 14 s for 150 and for 1,500 frames (FIELD.md section 2).
    Spec(
        "HEYGEM_PREPARE_SECONDS",
        "prepare_seconds",
        _positive_seconds,
        lambda: "300",
        "a task still preparing (before its frames; in HeyGem.ai's image, before its video_info line) this long "
        "after its start is a stall (snapshot, restart)",
    ),
    # HeyGem.ai's image logs no frame progress (FIELD-heygem-ai.md section 7): a task's only clock is its length.
    # 9.5 s of audio took 45 s there; a T4 took ~14 minutes for 357 characters (#488); HeyGem itself gives up
    # after 600 s without a result, and every later task hangs the same way (#471, #556).
    Spec(
        "HEYGEM_TASK_SECONDS",
        "task_seconds",
        _positive_seconds,
        lambda: "120",
        "HeyGem.ai's image (log dialect B): a task not ended this many seconds plus "
        "HEYGEM_TASK_SECONDS_PER_AUDIO_SECOND per second of its audio after its video_info line is a stall "
        "(snapshot, restart)",
    ),
    Spec(
        "HEYGEM_TASK_SECONDS_PER_AUDIO_SECOND",
        "task_seconds_per_audio_second",
        _non_negative_seconds,
        lambda: "10",
        "seconds of a dialect-B task's allowance per second of its audio (its audio_info)",
    ),
    Spec(
        "HEYGEM_WORKER_RESTART_WINDOW",
        "worker_restart_window",
        _positive_seconds,
        lambda: "600",
        "HeyGem.ai's image restarting its own workers (`av_transfer maybe blocked, restart...`) is recorded; "
        "a second time within this many seconds restarts the app",
    ),
    Spec(
        "HEYGEM_LINE_MAX",
        "line_max",
        _line_max,
        lambda: "64KB",
        "longest line of the app's output or log kept whole (4KB to 16MB); longer ones are cut and marked",
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
        "HEYGEM_SESSION_AUDIT",
        "session_audit",
        _bool,
        lambda: "on",
        "on: every ONNX Runtime session the app's Python processes create reports the providers it got "
        "(a sitecustomize first on the app's PYTHONPATH); off: nothing of it reaches the app",
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
    # Not `EP Error` on its own: the Python layer prints it before every retry, and with onnxruntime-gpu the
    # retry is on CUDA again (`Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider']`), which fails the
    # same way and kills the worker (HeyGem.ai's image, #471/#526/#592): not ready, never a CPU fallback.
    Spec(
        "HEYGEM_PATTERN_FALLBACK",
        "pattern_fallback",
        _regex,
        lambda: (
            r"^\d{4}-\S+ \S+ \[[EW]:onnxruntime:[^\]]*\] .*(?:Failed to load library \S*libonnxruntime_providers_cuda"
            r"|Failed to create CUDAExecutionProvider)"
            r"|^Falling back to \['CPUExecutionProvider'\]"
            r"|^\S+:\d+: UserWarning: Specified provider 'CUDAExecutionProvider' is not in available provider names"
        ),
        "regex on the app's other lines (ONNX Runtime's log, print output): ONNX Runtime fell back to the CPU",
    ),
)
