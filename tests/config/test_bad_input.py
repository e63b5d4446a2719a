"""Issue 8, items 3, 4 and 11: whatever a setting or the .env file holds, the answer is exit 0 or a one-line
exit 78 naming the key (and the file and line), never a secret, never exit 70, a traceback or a hang."""

from __future__ import annotations

import os
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.config.settings import build_settings, load_settings, read_env_file
from launcher.config.specs import SPECS
from launcher.errors import ConfigError
from launcher.preflight.appenv import prepare_environment
from launcher.service import supervisor_config
from launcher.system.rundir import RunDir
from tests.conftest import LAUNCH, assert_no_traceback, clean_environ

CPU = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider"}
SECRET = "s3cr3t-XYZ"


# -- item 3: a secret is never printed -------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        f'API_TOKEN="{SECRET}\n',  # the handed case: no closing quote
        f"export DB_PASSWORD='{SECRET}\n",
        f'SECRET_KEY = "{SECRET}\\\n',
    ],
)
def test_unparsable_line_names_file_line_and_key_never_the_value(launch, app_dir: Path, line: str) -> None:
    (app_dir / "app.env").write_text("GOOD=1\n" + line)
    run = launch("--check-only", "--env-file", str(app_dir / "app.env"), env=CPU)
    assert run.returncode == 78, run
    assert SECRET not in run.stdout + run.stderr
    key = line.split("=")[0].replace("export ", "").strip()
    assert "app.env:2:" in run.stderr and key in run.stderr
    assert_no_traceback(run)


# -- item 4: NUL bytes and bytes that are not UTF-8 --------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"APP_TOKEN=a\x00b\n", "the value of APP_TOKEN contains a NUL byte"),
        (b"HEYGEM_STALL_SECONDS=2\x000\n", "the value of HEYGEM_STALL_SECONDS contains a NUL byte"),
        (b"APP_NAME=caf\xe9\n", "the value of APP_NAME is not valid UTF-8"),
        (b"HEYGEM_APP_COMMAND=python \xff.py\n", "the value of HEYGEM_APP_COMMAND is not valid UTF-8"),
        (b"A\x00B=1\n", "the key contains a NUL byte"),
    ],
)
def test_bad_bytes_in_the_env_file_exit_78_naming_key_and_file(
    launch, app_dir: Path, content: bytes, expect: str
) -> None:
    (app_dir / ".env").write_bytes(content)
    run = launch("--check-only", env=CPU)
    assert run.returncode == 78, run
    assert expect in run.stderr and ".env:1:" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert_no_traceback(run)


def test_bytes_that_are_not_utf8_in_the_environment_exit_78(app_dir: Path) -> None:
    env = {k.encode(): v.encode() for k, v in clean_environ(**CPU).items()}
    env[b"HEYGEM_CONDA_ENV"] = b"\xff\xfe"
    proc = subprocess.run([*LAUNCH, "--check-only"], env=env, cwd=app_dir, capture_output=True, timeout=60)
    assert proc.returncode == 78 and b"HEYGEM_CONDA_ENV" in proc.stderr and b"not valid UTF-8" in proc.stderr
    env[b"HEYGEM_CONDA_ENV"] = b""
    env[b"APP_SETTING"] = b"caf\xe9"  # an app key: it could not be handed to the app as text
    proc = subprocess.run([*LAUNCH, "--check-only"], env=env, cwd=app_dir, capture_output=True, timeout=60)
    assert proc.returncode == 78 and b"APP_SETTING" in proc.stderr, proc.stderr


def test_a_working_directory_that_no_longer_exists_exits_78(tmp_path: Path) -> None:
    """Started from a folder removed under it (a shell left in a deleted release folder): one line, 78, no
    internal error, for `--check-only` and for the run."""
    gone = tmp_path / "gone"
    gone.mkdir()
    for args in (["--check-only"], []):
        gone.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [*LAUNCH, *args],
            cwd=gone,
            env=clean_environ(**CPU),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        gone.rmdir()  # while its interpreter starts (~15 ms): the launcher's first look at it comes after
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 78, err
        assert "the current directory no longer exists" in err
        assert "Traceback" not in err and len(err.splitlines()) == 1


# -- item 11: settings valid in form but not for their use --------------------------------------------
HANDED = [
    ("HEYGEM_PATTERN_BLOCKED", "a{99999999999}", "too large"),
    ("HEYGEM_PATTERN_FAILURE", "(" * 400 + "a" + ")" * 400, "nested more than"),
    ("HEYGEM_PATTERN_TASK_END", "a{4294967296}", "too large"),
    ("HEYGEM_PATTERN_PROGRESS", "(" * 1000 + "a" + ")" * 1000, "longer than"),
    ("HEYGEM_CONDA_ENV", "~nouser-heygem/x", "no such user"),
    ("HEYGEM_APP_DIR", "~nouser-heygem/x", "no such user"),
    ("HEYGEM_CONDA_ROOT", "/" + "c" * 300, "longer than 255"),
    ("HEYGEM_RUN_DIR", "/tmp/" + "d/" * 2100, "longer than 4095"),
    ("HEYGEM_RUN_DIR", "/tmp/run\nx", "newline"),
    ("HEYGEM_RUN_DIR", "/tmp/" + "r" * 100, "unix socket"),
    ("HEYGEM_PREFLIGHT_TIMEOUT", "1e308", "at most"),
    ("HEYGEM_PREFLIGHT_TIMEOUT", "inf", "positive number"),
    ("HEYGEM_APP_LOG", "/tmp", "not a regular file"),
    ("HEYGEM_APP_LOG", "/dev/zero", "not a regular file"),
    ("HEYGEM_PATTERN_BLOCKED", "", "must not be empty"),
    ("HEYGEM_PATTERN_FAILURE", "x*", "matches an empty line"),
    ("HEYGEM_APP_PORT", "²", "TCP port"),
    ("HEYGEM_START_RETRIES", "99999999999999999999", "whole number"),
    ("HEYGEM_STOP_GRACE", "1_0", "whole number"),
    ("HEYGEM_LOG_MAX_BYTES", "99999999999999GB", "size"),
    ("HEYGEM_GPU_MEMORY_MIN", "6 GiB", "size"),
    ("HEYGEM_GPU_MEMORY_MIN", "512KB", "at least 1MB"),
    ("HEYGEM_APP_COMMAND", "python 'app\n.py'", "newline"),
    ("HEYGEM_READY_MARKERS", "a\nb", "newline"),
    # Found by a newcomer pass: every marker and rule would be cut away, silently.
    ("HEYGEM_LINE_MAX", "0", "at least 4KB"),
    ("HEYGEM_LINE_MAX", "10", "at least 4KB"),
    ("HEYGEM_LINE_MAX", "17MB", "at most 16MB"),
    ("HEYGEM_LINE_MAX", "100GB", "at most 16MB"),
    ("HEYGEM_PREFLIGHT_TIMEOUT", "0", "at most 2592000 (30 days)"),
    ("HEYGEM_GPUS", "\u0662", "neither a GPU index"),
]


@pytest.mark.parametrize(("key", "value", "reason"), HANDED)
def test_setting_unfit_for_its_use_exits_78_naming_the_key(
    launch, app_dir: Path, key: str, value: str, reason: str
) -> None:
    run = launch("--check-only", env={**CPU, key: value}, timeout=30)
    assert run.returncode == 78, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and reason in lines[0], run.stderr
    assert_no_traceback(run)


def test_app_log_that_is_a_fifo_is_refused_without_blocking(launch, app_dir: Path) -> None:
    fifo = app_dir / "dh.log"
    os.mkfifo(fifo)
    run = launch("--check-only", env={**CPU, "HEYGEM_APP_LOG": str(fifo)}, timeout=30)
    assert run.returncode == 78 and "HEYGEM_APP_LOG" in run.stderr and "not a regular file" in run.stderr


def test_env_file_that_is_a_fifo_or_a_device_is_refused_without_blocking(launch, app_dir: Path) -> None:
    fifo = app_dir / "fifo.env"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), app_dir):  # a folder opens, and fdopen() of it raised
        run = launch("--check-only", env={**CPU, "HEYGEM_ENV_FILE": str(path)}, timeout=30)
        assert run.returncode == 78 and "not a regular file" in run.stderr, run
        assert_no_traceback(run)


def test_an_env_line_without_any_quote_is_not_blamed_on_a_quote(launch, app_dir: Path) -> None:
    (app_dir / "app.env").write_text("GOOD=1\nthis is not a line\n")
    run = launch("--check-only", "--env-file", str(app_dir / "app.env"), env=CPU)
    assert run.returncode == 78 and "app.env:2: cannot parse the line; a line is KEY=VALUE" in run.stderr, run


def test_json_asked_for_gets_a_json_error_document(launch, app_dir: Path) -> None:
    """--json promises one document on stdout: a bad setting's too, with the same line and code."""
    import json

    run = launch("--check-only", "--json", env={**CPU, "HEYGEM_STOP_GRACE": "soon"}, timeout=30)
    assert run.returncode == 78
    document = json.loads(run.stdout)
    assert document["ok"] is False and document["exit_code"] == 78 and "HEYGEM_STOP_GRACE" in document["error"]


@pytest.mark.parametrize(
    "args",
    [
        ("--check-only", "--json", "--bogus"),  # click's "no such option"
        ("--json", "--check-only", "--app-dir"),  # an option without its value
        ("status", "--json", "--nope"),  # a subcommand's
        ("--check-only", "--json=x"),  # asked for, if wrongly
        ("status", "--json=x"),
    ],
)
def test_json_asked_for_gets_a_usage_error_document_too(launch, app_dir: Path, args: tuple[str, ...]) -> None:
    """A usage error (64) with --json on the command line: the one error line on stderr and its document on
    stdout, the same error and code, nothing else there (before: stdout empty)."""
    import json

    run = launch(*args, env=CPU, timeout=30)
    assert run.returncode == 64, run
    document = json.loads(run.stdout)
    assert document == {"ok": False, "error": document["error"], "exit_code": 64}
    assert f"heygem-launch: error: {document['error']}" in run.stderr.splitlines()
    assert_no_traceback(run)


@pytest.mark.parametrize(
    "args",
    [
        ("--app-dir", "--json", "--bogus"),  # --json is --app-dir's value here (found by a helper)
        ("replay", "--stderr", "--json", "x"),
        ("replay", "--", "--json"),  # a file named --json
        ("--bogus",),
    ],
)
def test_no_document_where_json_was_not_asked_for(launch, app_dir: Path, args: tuple[str, ...]) -> None:
    run = launch(*args, env=CPU, timeout=30)
    assert run.returncode == 64 and run.stdout == "", run
    assert_no_traceback(run)


# -- fuzz: every setting, through the environment and through the .env file ----------------------------
# Text that stresses parsers: digits, units, signs, path pieces, regex syntax, quotes, controls, non-ASCII.
ALPHABET = string.printable + "\x00\x01\x7f²٣é中\u2028\ud800"
VALUES = st.one_of(
    st.text(alphabet=ALPHABET, max_size=40),
    st.sampled_from(["", "0", "-1", "1e308", "nan", "inf", "1_0", "~nouser/x", "/dev/zero", "a{99999999999}", "("]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
KEYS = st.sampled_from([spec.key for spec in SPECS])


def outcome(environ: dict[str, str], dotenv: dict[str, str | None], cwd: Path) -> None:
    """What `--check-only` and a start do before the probe: build and check the settings, prepare the app's
    environment (conda, library path) and render supervisord's config; only ConfigError may come out."""
    try:
        built = build_settings(dotenv, environ, {}, cwd=cwd)
        from launcher.config.settings import check_paths

        check_paths(built)
    except ConfigError as exc:
        assert "\n" not in str(exc) or "HEYGEM" in str(exc)
        return
    try:
        prepare_environment(built, {"PATH": "/usr/bin:/bin"})
    except ConfigError:
        return
    run = RunDir(built.run_dir)
    supervisor_config.render(
        built,
        run,
        supervisor_config.Credentials("u", "p"),
        programs=(supervisor_config.AppProgram(supervisor_config.PROGRAM, run.app_env(1)),),
        python="/usr/bin/python3",
        user=None,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, value=VALUES, via_env_file=st.booleans())
def test_fuzz_every_setting_gives_a_setting_or_a_config_error(
    tmp_path: Path, key: str, value: str, via_env_file: bool
) -> None:
    environ = {"HEYGEM_RUN_DIR": str(tmp_path / "run"), "HEYGEM_APP_DIR": str(tmp_path)}
    if via_env_file:
        env_file = tmp_path / "fuzz.env"
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        try:
            env_file.write_text(f"{key}='{quoted}'\n", encoding="utf-8", errors="surrogateescape")
        except ValueError:
            return
        try:
            dotenv = read_env_file(env_file)
        except ConfigError:
            return
        environ.pop(key, None)
        outcome(environ, dotenv, tmp_path)
    else:
        environ[key] = value
        outcome(environ, {}, tmp_path)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, value=st.text(alphabet=string.printable + "²é\x01", max_size=30), via_env_file=st.booleans())
def test_fuzz_check_only_for_real_exits_0_or_78(app_dir: Path, key: str, value: str, via_env_file: bool) -> None:
    """The installed command, for real, each run bounded: exit 0 or 78, one line, never 70 or a traceback."""
    env = clean_environ(**CPU, HEYGEM_PREFLIGHT_TIMEOUT="20")
    value = value.replace("\x00", "")
    if via_env_file:
        (app_dir / ".env").write_text(f"{key}='{value.replace(chr(39), '')}'\n")
    else:
        (app_dir / ".env").unlink(missing_ok=True)
        env[key] = value
    proc = subprocess.run(
        [*LAUNCH, "--check-only"], env=env, cwd=app_dir, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode in (0, 69, 78), (key, value, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


def test_load_settings_reads_the_same_as_the_cli(tmp_path: Path) -> None:
    """Sanity for the fuzz harness: load_settings (what the CLI calls) refuses what `outcome` refuses."""
    with pytest.raises(ConfigError, match="HEYGEM_PATTERN_BLOCKED"):
        load_settings({}, {"HEYGEM_PATTERN_BLOCKED": "", "HEYGEM_RUN_DIR": str(tmp_path)}, tmp_path)
