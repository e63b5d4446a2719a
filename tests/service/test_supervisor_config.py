"""The generated supervisord config, read by supervisor's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from launcher.config.settings import build_settings
from launcher.service.supervisor_config import PROGRAM, AppProgram, Credentials, render
from launcher.system.rundir import RunDir


def parse(tmp_path: Path, **environ: str):  # type: ignore[no-untyped-def]
    settings = build_settings(
        {}, {"HEYGEM_APP_COMMAND": "python app.py --title '100% real'", **environ}, {}, cwd=tmp_path
    )
    run = RunDir(tmp_path)
    text = render(
        settings,
        run,
        Credentials("heygem", "s3cret-pass"),
        programs=(AppProgram(PROGRAM, run.app_env(1)),),
        python="/usr/bin/python3",
        user="root",
    )
    (tmp_path / "supervisord.conf").write_text(text)
    options = ServerOptions()
    options.realize(args=["-c", str(tmp_path / "supervisord.conf")])
    return options, text


def test_supervisors_parser_reads_the_defaults(tmp_path: Path) -> None:
    options, text = parse(tmp_path)
    (group,) = options.process_group_configs
    (app,) = group.process_configs
    assert app.name == "app"
    assert app.stopasgroup and app.killasgroup
    assert app.stopwaitsecs == 8  # under Docker's 10 s
    assert app.startretries == 3 and app.startsecs == 5
    assert app.autorestart is False  # the launcher starts an exited app again, after its backoff (restartwaits.py)
    assert app.directory == str(tmp_path)
    assert app.stdout_logfile == str(tmp_path / "app.log") and app.redirect_stderr
    # The command survives '%' and quoting: the wrapper gets the app's argv exactly.
    assert app.command.endswith("python app.py --title '100% real'")
    assert options.server_configs[0]["family"] != "inet"  # unix socket only
    assert options.server_configs[0]["password"].startswith("{SHA}")
    assert "inet_http_server" not in text and "s3cret-pass" not in text


@pytest.mark.parametrize(
    ("key", "value", "attr", "expected"),
    [
        ("HEYGEM_STOP_GRACE", "5", "stopwaitsecs", 5),
        ("HEYGEM_STOP_AS_GROUP", "false", "stopasgroup", False),
        ("HEYGEM_STOP_AS_GROUP", "false", "killasgroup", False),
        ("HEYGEM_START_RETRIES", "7", "startretries", 7),
        ("HEYGEM_LOG_BACKUPS", "1", "stdout_logfile_backups", 1),
        ("HEYGEM_LOG_MAX_BYTES", "2MB", "stdout_logfile_maxbytes", 2 * 2**20),
    ],
)
def test_each_default_is_settable(tmp_path: Path, key: str, value: str, attr: str, expected: object) -> None:
    options, _ = parse(tmp_path, **{key: value})
    assert getattr(options.process_group_configs[0].process_configs[0], attr) == expected
