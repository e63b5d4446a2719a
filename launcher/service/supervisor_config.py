"""Pure: the supervisord config for the app, from the settings and the run dir.

Choices that differ from supervisord's defaults, and why:
- stopasgroup/killasgroup on: HeyGem's multiprocessing workers hold GPU memory and must not survive a stop.
- stopwaitsecs = HEYGEM_STOP_GRACE (8), under Docker's 10 s, so the group is killed by us, not by Docker.
- the app runs through app-wrapper.sh, which sets exactly the preflight's environment and clears the group
  when the app dies on its own, before it is started again.
- control only over a unix socket (0700, in the 0700 run dir) with generated credentials; no TCP port.
- autorestart off: the launcher starts an app that exited again, after a growing wait (restartwaits.py);
  supervisord's own retries remain for quick failures (startsecs, startretries, then FATAL).
- `silent`: the launcher prints what matters; supervisord's own log stays in the run dir.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from launcher.config.settings import Settings
from launcher.system.rundir import RunDir

PROGRAM = "app"
WRAPPER = Path(__file__).with_name("data") / "app-wrapper.sh"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @property
    def password_sha(self) -> str:
        # supervisord accepts "{SHA}<hex>": the config file then holds no usable password.
        return "{SHA}" + hashlib.sha1(self.password.encode()).hexdigest()


def _value(text: str) -> str:
    """A config value: '%' is ConfigParser interpolation to supervisord, and a newline would end the value."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"a newline cannot be written into supervisord's config: {text!r}")
    return text.replace("%", "%%")


def app_command(python: str, env_file: Path, argv: tuple[str, ...]) -> str:
    return shlex.join(["/bin/sh", str(WRAPPER), python, str(env_file), *argv])


@dataclass(frozen=True)
class AppProgram:
    """One supervised app: its program name and the environment file its wrapper applies."""

    name: str
    env_file: Path


def render(
    settings: Settings,
    run: RunDir,
    credentials: Credentials,
    *,
    programs: tuple[AppProgram, ...],
    python: str,
    user: str | None,
) -> str:
    """The whole config: one `[program:…]` per app (`app` alone, or `app-0`, `app-1`, … with HEYGEM_GPUS);
    `user` is set only when running as root, to keep supervisord from logging CRIT."""
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "silent=true",
        f"logfile={_value(str(run.supervisord_log))}",
        "logfile_maxbytes=1MB",
        "logfile_backups=1",
        "loglevel=info",
        f"pidfile={_value(str(run.path / 'supervisord.pid'))}",
        f"childlogdir={_value(str(run.path))}",
        *([f"user={_value(user)}"] if user else []),
        "",
        "[unix_http_server]",
        f"file={_value(str(run.socket))}",
        "chmod=0700",
        f"username={_value(credentials.username)}",
        f"password={_value(credentials.password_sha)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
    ]
    for program in programs:
        lines += _program(settings, run, program, python)
    return "\n".join(lines)


def _program(settings: Settings, run: RunDir, program: AppProgram, python: str) -> list[str]:
    s = settings
    return [
        f"[program:{program.name}]",
        f"command={_value(app_command(python, program.env_file, s.app_command))}",
        f"directory={_value(str(s.app_dir))}",
        "autostart=true",
        "autorestart=false",
        f"startsecs={s.start_seconds}",
        f"startretries={s.start_retries}",
        "stopsignal=TERM",
        f"stopwaitsecs={s.stop_grace}",
        f"stopasgroup={'true' if s.stop_as_group else 'false'}",
        f"killasgroup={'true' if s.stop_as_group else 'false'}",
        "redirect_stderr=true",
        f"stdout_logfile={_value(str(run.program_log(program.name)))}",
        f"stdout_logfile_maxbytes={s.log_max_bytes}",
        f"stdout_logfile_backups={s.log_backups}",
        "",
    ]
