"""The run dir: a private (0700) folder for the control socket, its credentials, configs, logs and state."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from launcher import exitcodes
from launcher.errors import ConfigError, LaunchError

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import Any

SOCKET_NAME = "supervisor.sock"
# Where the app's processes report each ONNX Runtime session (preflight/audit/sitecustomize.py); shorter than
# SOCKET_NAME, so the run dir's check that a socket path fits covers it.
SESSIONS_SOCKET_NAME = "sessions.sock"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def socket(self) -> Path:
        return self.path / SOCKET_NAME

    @property
    def sessions_socket(self) -> Path:
        return self.path / SESSIONS_SOCKET_NAME

    @property
    def config(self) -> Path:
        return self.path / "supervisord.conf"

    @property
    def credentials(self) -> Path:
        return self.path / "control.json"

    @property
    def pidfile(self) -> Path:
        return self.path / "heygem-launch.pid"

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def restart_result(self) -> Path:
        return self.path / "restart.json"

    def restart_request(self, request_id: str) -> Path:
        return self.path / f"restart-request.{request_id}.json"

    def restart_requests(self) -> list[Path]:
        return list(self.path.glob("restart-request.*.json"))

    @property
    def settings(self) -> Path:
        """The running generation's settings, as given (0600: the app's .env keys may be secrets)."""
        return self.path / "settings.json"

    @property
    def supervisord_log(self) -> Path:
        return self.path / "supervisord.log"

    def program_log(self, program: str) -> Path:
        """What supervisord captured of one app's output: `app.log` for the single app, as always."""
        return self.path / f"{program}.log"

    def app_env(self, generation: int, program: str = "app") -> Path:
        return self.path / (
            f"app-env.{generation}.json" if program == "app" else f"app-env.{generation}.{program}.json"
        )

    def app_envs(self, generation: int) -> list[Path]:
        """Every app's environment file of a generation."""
        return [self.app_env(generation), *self.path.glob(f"app-env.{generation}.*.json")]


class RunDirError(LaunchError):
    """The run dir cannot be written (disk full, read-only, gone): the service stops cleanly with this line."""

    exit_code = exitcodes.SOFTWARE


class RunDirGone(RunDirError):
    """The run dir was removed (or moved) while the service ran: by hand, or systemd-tmpfiles ageing /tmp."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the run dir {path} was removed while the service ran (its control socket, credentials and state "
            "went with it)",
            exit_code=exitcodes.SOFTWARE,
        )


def identity(path: Path) -> tuple[int, int] | None:
    """The folder's device and inode, or None when it is gone: a run dir removed and made again is not ours."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


# Files the launcher itself writes are small; a bigger one is not ours (or is a trap: /dev/zero, a FIFO).
READ_MAX = 8 * 2**20


def _owner_ok(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def untrusted(path: Path) -> str | None:
    """Why a run dir cannot be trusted, or None: it must be a real folder owned by this user or root and
    writable by no one else, and no folder above it may let another user swap it (writable by others
    without the sticky bit, or owned by another user)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory (a symlink is refused)"
    if not _owner_ok(st.st_uid):
        return f"owned by uid {st.st_uid}, neither this user nor root"
    if st.st_mode & 0o022:
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return unsafe_parents(path)


def unsafe_parents(path: Path) -> str | None:
    """Why a folder above `path` lets another user replace what is below it, or None."""
    for parent in Path(os.path.abspath(path)).parents:
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"cannot read {parent}: {exc.strerror}"
        if not _owner_ok(st.st_uid):
            return f"{parent} is owned by uid {st.st_uid}, neither this user nor root"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"{parent} is writable by others without the sticky bit"
    return None


def prepare(path: Path) -> RunDir:
    """Create the run dir 0700, or take over an existing one that is ours and private; refuse one that
    cannot be written (read-only, full) before anything is started."""
    where = f"HEYGEM_RUN_DIR={str(path)!r}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where}: not a directory (a symlink is refused)")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{where}: owned by uid {st.st_uid}, not by this user")
    reason = unsafe_parents(path)
    if reason:
        raise ConfigError(f"{where}: {reason}")
    run = RunDir(path)
    try:
        os.chmod(path, 0o700)
        probe = path / ".write-test"
        _write(probe, "ok\n")
        probe.unlink()
    except (OSError, RunDirError) as exc:
        text = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"{where}: cannot write there: {text}") from None
    return run


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_private(path: Path, text: str) -> None:
    """Atomic write, 0600 from the first byte. Every write to the run dir comes here: an OS error (ENOSPC,
    EROFS, EIO) becomes one RunDirError naming the file, which the service turns into a clean stop."""
    try:
        _write(path, text)
    except OSError as exc:
        raise RunDirError(f"run dir {path.parent}: cannot write {path.name}: {exc.strerror}") from None
    except UnicodeEncodeError:
        raise RunDirError(f"run dir {path.parent}: {path.name}: text that is not UTF-8") from None


def remove(path: Path) -> None:
    """Remove a run dir file if it is there; a run dir gone read-only must not turn a cleanup into a crash."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_trusted(path: Path) -> bytes | None:
    """A file of the run dir, only if it is a regular file owned by this user or root and writable by no
    one else (another user must not steer a root `restart`); None otherwise. Never blocks (O_NONBLOCK) and
    never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _owner_ok(st.st_uid) or st.st_mode & 0o022:
            return None
        data = handle.read(READ_MAX + 1)
    return data if len(data) <= READ_MAX else None


def read_json(path: Path) -> Any:
    data = read_trusted(path)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        return None


def _start_ticks(pid: int | str) -> str | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]  # field 22: start time, tells a reused pid apart


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


def write_pidfile(run: RunDir) -> int:
    """Write the pid file and return a descriptor the service keeps open on it for its whole life: that open
    file is what tells a client this process is the heygem-launch of this run dir (see `running_pid`)."""
    write_json(run.pidfile, {"pid": os.getpid(), "pid_ns": _pid_namespace(), "start": _start_ticks("self")})
    try:
        return os.open(run.pidfile, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise RunDirError(f"run dir {run.path}: cannot open {run.pidfile.name}: {exc.strerror}") from None


def is_launcher(pid: int) -> bool:
    """/proc/PID/cmdline is heygem-launch: its console script, or `python -m launcher`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg) == b"heygem-launch" for arg in argv[:3]) or (
        b"launcher" in argv[1:3] and (b"-m" in argv[1:3])
    )


def holds(pid: int, path: Path) -> bool:
    """The process has `path` open (the same inode): only the service that wrote the pid file does."""
    try:
        want = os.stat(path)
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return True
    return False


def check_trusted(run: RunDir) -> None:
    """For the client side (`status`, `restart`, probes, `doctor`): a ConfigError naming why not. A run dir
    that does not exist is no service running there (the caller says so), not a config error."""
    if not os.path.lexists(run.path):
        return
    reason = untrusted(run.path)
    if reason:
        raise ConfigError(f"HEYGEM_RUN_DIR={str(run.path)!r}: not trusted: {reason}")


def check_not_in_use(run: RunDir) -> None:
    """Raises LaunchError (exit 78) when another heygem-launch serves from this run dir: two services would
    share one control socket and one state file."""
    other = running_pid(run)
    if other is not None and other != os.getpid():
        raise LaunchError(
            f"HEYGEM_RUN_DIR={str(run.path)!r}: in use by heygem-launch pid {other}",
            exit_code=exitcodes.CONFIG,
        )


def running_pid(run: RunDir) -> int | None:
    """The pid of the heygem-launch that owns this run dir, only when everything says so: the run dir is
    trusted, the pid file is in our PID namespace with the process's start time, and the process is a
    heygem-launch holding that very pid file open. Anything less (a pid another user wrote, a pid from another
    namespace, a reused pid) is never returned, so it is never signalled."""
    if untrusted(run.path):
        return None
    data = read_json(run.pidfile)
    if not isinstance(data, dict) or data.get("pid_ns") != _pid_namespace():
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or _start_ticks(pid) != data.get("start"):
        return None
    if not is_launcher(pid) or not holds(pid, run.pidfile):
        return None
    return pid
