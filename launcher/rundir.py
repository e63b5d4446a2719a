"""The run dir: a private (0700) folder for the control socket, its credentials, configs, logs and state."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ConfigError

SOCKET_NAME = "supervisor.sock"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def socket(self) -> Path:
        return self.path / SOCKET_NAME

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

    @property
    def app_log(self) -> Path:
        return self.path / "app.log"

    @property
    def supervisord_log(self) -> Path:
        return self.path / "supervisord.log"

    def app_env(self, generation: int) -> Path:
        return self.path / f"app-env.{generation}.json"


def prepare(path: Path) -> RunDir:
    """Create the run dir 0700, or take over an existing one that is ours and private."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"HEYGEM_RUN_DIR={str(path)!r}: cannot create: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"HEYGEM_RUN_DIR={str(path)!r}: not a directory (a symlink is refused)")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"HEYGEM_RUN_DIR={str(path)!r}: owned by uid {st.st_uid}, not by this user")
    os.chmod(path, 0o700)
    return RunDir(path)


def write_private(path: Path, text: str) -> None:
    """Atomic write, 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _start_ticks(pid: int | str) -> str | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]  # field 22: start time, tells a reused pid apart


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


def write_pidfile(run: RunDir) -> None:
    write_json(run.pidfile, {"pid": os.getpid(), "pid_ns": _pid_namespace(), "start": _start_ticks("self")})


def running_pid(run: RunDir) -> int | None:
    """The pid of the heygem-launch that owns this run dir, if it is alive and in our PID namespace.

    A pid from another namespace (the launcher is PID 1 in its container) means nothing here: signalling
    it would hit an unrelated process, so it is never returned.
    """
    data = read_json(run.pidfile)
    if not isinstance(data, dict) or data.get("pid_ns") != _pid_namespace():
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or _start_ticks(pid) != data.get("start"):
        return None
    return pid
