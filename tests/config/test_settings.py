"""Settings: layering, the app's `.env` keys, and one clear line with exit 78 for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config.settings import build_settings, closest_key, read_env_file
from launcher.errors import ConfigError
from tests.conftest import assert_no_traceback

BAD = [
    ("HEYGEM_CONDA_ROOT", "relative/conda"),
    ("HEYGEM_CONDA_ENV", "no-such-env"),
    ("HEYGEM_APP_DIR", "/no/such/app/dir"),
    ("HEYGEM_APP_COMMAND", "python 'app.py"),
    ("HEYGEM_APP_COMMAND", "   "),
    ("HEYGEM_REQUIRE_PROVIDER", "CUDA"),
    ("HEYGEM_EXTRA_LIBRARY_PATH", "/tmp"),  # world-writable: anyone could plant a libcuda.so.1 there
    ("HEYGEM_PREFLIGHT_TIMEOUT", "soon"),
    ("HEYGEM_PREFLIGHT_TIMEOUT", "-5"),
    ("HEYGEM_PREFLIGHT_TIMEOUT", "nan"),
    ("HEYGEM_RUN_DIR", "run"),
]


@pytest.mark.parametrize("layer", ["environment", ".env", "flag"])
@pytest.mark.parametrize(("key", "value"), BAD)
def test_bad_setting_exits_78_naming_the_key(launch, app_dir: Path, layer: str, key: str, value: str) -> None:
    args: list[str] = ["--check-only"]
    env: dict[str, str] = {}
    if layer == "environment":
        env[key] = value
    elif layer == ".env":
        (app_dir / ".env").write_text(f"{key}='{value}'\n" if "'" not in value else f'{key}="{value}"\n')
    else:
        args[:0] = [f"--{key.removeprefix('HEYGEM_').lower().replace('_', '-')}", value]
    run = launch(*args, env=env)
    assert run.returncode == 78, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], run.stderr
    assert run.stdout == ""
    assert_no_traceback(run)


def test_env_file_that_does_not_parse_names_file_and_line(launch, app_dir: Path) -> None:
    (app_dir / "bad.env").write_text("GOOD=1\nthis line is not an assignment\n")
    run = launch("--check-only", "--env-file", str(app_dir / "bad.env"))
    assert run.returncode == 78
    assert f"{app_dir / 'bad.env'}:2:" in run.stderr


def test_missing_env_file_is_named(launch, app_dir: Path) -> None:
    run = launch("--check-only", env={"HEYGEM_ENV_FILE": str(app_dir / "nope.env")})
    assert run.returncode == 78
    assert "nope.env: env file not found" in run.stderr


def test_unknown_key_warns_with_the_closest_known_key(launch, app_dir: Path, ort_env: Path) -> None:
    (app_dir / ".env").write_text("HEYGEM_CONDA_ENVV=human\n")
    run = launch("--check-only", "--conda-env", str(ort_env), "--require-provider", "CPUExecutionProvider")
    assert run.returncode == 0
    assert "unknown setting HEYGEM_CONDA_ENVV in the .env file; did you mean HEYGEM_CONDA_ENV?" in run.stderr


def test_secrets_never_printed(launch, app_dir: Path, ort_env: Path) -> None:
    (app_dir / ".env").write_text("HF_TOKEN=hf_supersecret\nDB_PASSWORD=hunter2\nApiKey=k-123\nMODE=fast\n")
    for args in (("--check-only",), ("--check-only", "--json")):
        run = launch(*args, "--conda-env", str(ort_env))
        out = run.stdout + run.stderr
        for secret in ("hf_supersecret", "hunter2", "k-123"):
            assert secret not in out
    doc = run.json
    assert doc["environment"]["HF_TOKEN"] == "***"
    assert doc["environment"]["MODE"] == "fast"


def test_a_key_bound_twice_in_the_env_file_is_warned_with_both_lines_never_the_value(
    launch, app_dir: Path, ort_env: Path
) -> None:
    """python-dotenv (and Docker's --env-file) keep the last binding silently; an operator who added a line at
    the bottom and another left at the top is told which counts. Never the values: one may be a secret."""
    (app_dir / ".env").write_text("HF_TOKEN=old-secret\nMODE=fast\nexport HF_TOKEN=new-secret\nHF_TOKEN\nMODE=slow\n")
    environ = {"HF_TOKEN": "from-host"}
    for args in (("--check-only",), ("--check-only", "--json")):
        run = launch(*args, "--conda-env", str(ort_env), "--require-provider", "CPUExecutionProvider", env=environ)
        assert run.returncode == 0, run
        assert "secret" not in run.stdout + run.stderr and "from-host" not in run.stdout + run.stderr
    shown = [f"{app_dir / '.env'}:{n}: HF_TOKEN is set again (first on line 1); the last one counts" for n in (3, 4)]
    shown.append(f"{app_dir / '.env'}:5: MODE is set again (first on line 2); the last one counts")
    assert run.json["warnings"][:3] == shown
    assert run.json["environment"]["MODE"] == "slow"  # the last binding counts, as before
    run = launch("--check-only", "--conda-env", str(ort_env), "--require-provider", "CPUExecutionProvider")
    assert [f"heygem-launch: warning: {line}" for line in shown] == run.stderr.splitlines()[:3], run


def test_a_key_bound_once_is_not_warned() -> None:
    import tempfile

    from launcher.config.settings import read_env_file_noted

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, ".env")
        path.write_text("A=1\nB=2\n# A=3\nHEYGEM_X=1\n")
        assert read_env_file_noted(path) == ({"A": "1", "B": "2", "HEYGEM_X": "1"}, ())


@pytest.mark.parametrize(
    ("text", "notes"),
    [
        # python-dotenv's own line number is where the blank lines before a binding begin: found by a helper.
        ("\n\nA=1\n\nA=2\n", ["5: A is set again (first on line 3)"]),
        (
            "A=1\n\n\n\nA=2\n# c\n\n   \nexport A=3\n",
            ["5: A is set again (first on line 1)", "9: A is set again (first on line 1)"],
        ),
        ("A=1\r\n\r\nA=2\r\n", ["3: A is set again (first on line 1)"]),
        # A bare line's "key" may be a token pasted on its own line: it is not shown.
        (
            "OPENAI_API_KEY=\nsk-proj-AbCdEf0123456789\nB=1\nsk-proj-AbCdEf0123456789\n",
            ["4: the same entry is set again (first on line 2)"],
        ),
        # Nor is a key with control characters (a terminal would run them).
        ("X\x1b]0;pwned\x07=1\nX\x1b]0;pwned\x07=2\n", ["2: the same entry is set again (first on line 1)"]),
    ],
)
def test_env_file_warnings_name_the_lines_an_editor_shows(tmp_path: Path, text: str, notes: list[str]) -> None:
    from launcher.config.settings import read_env_file_noted

    path = tmp_path / ".env"
    path.write_bytes(text.encode())
    assert list(read_env_file_noted(path)[1]) == [f"{path}:{note}; the last one counts" for note in notes]


def test_an_unparsable_line_after_blank_lines_is_named_by_its_own_number(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('A=1\n\n\nB="open\n')
    with pytest.raises(ConfigError, match=rf"^{path}:4: cannot parse the line \(key 'B'\)"):
        read_env_file(path)


@pytest.mark.parametrize("key", ["DB_PASS", "API_AUTH", "SSH_PRIVATE", "SESSION_COOKIE", "MYSQL_PASSPHRASE"])
def test_secret_names_beyond_the_usual_four_are_masked(key: str) -> None:
    """Found by a newcomer pass: DB_PASS=... and API_AUTH=... from .env were printed in clear."""
    from launcher.config.masking import mask_env

    assert mask_env({key: "s3cr3t", "MODE": "fast"}) == {key: "***", "MODE": "fast"}


def test_layers_lowest_first() -> None:
    cwd = Path("/")
    dotenv = {"HEYGEM_APP_COMMAND": "python a.py", "HEYGEM_PREFLIGHT_TIMEOUT": "5", "HEYGEM_RUN_DIR": "/r1"}
    environ = {"HEYGEM_PREFLIGHT_TIMEOUT": "6", "HEYGEM_RUN_DIR": "/r2"}
    flags = {"HEYGEM_RUN_DIR": "/r3"}
    s = build_settings(dotenv, environ, flags, cwd=cwd)
    assert s.app_command == ("python", "a.py")
    assert s.preflight_timeout == 6.0
    assert str(s.run_dir) == "/r3"
    assert s.require_provider == "CUDAExecutionProvider"
    assert s.sources["HEYGEM_APP_COMMAND"] == ".env" and s.sources["HEYGEM_RUN_DIR"] == "flag"


def test_app_keys_from_env_file_go_to_the_app_and_bare_keys_pass_through() -> None:
    s = build_settings(
        {"HEYGEM_CONDA_ENV": "human", "MODE": "fast", "PASSTHRU": None, "ABSENT": None},
        {"PASSTHRU": "from-host"},
        {},
        cwd=Path("/"),
    )
    assert dict(s.app_env) == {"MODE": "fast", "PASSTHRU": "from-host"}


@pytest.mark.parametrize(
    ("typo", "known"),
    [
        ("HEYGEM_CONDAENV", "HEYGEM_CONDA_ENV"),
        ("HEYGEM_REQUIRED_PROVIDER", "HEYGEM_REQUIRE_PROVIDER"),
        ("HEYGEM_PREFLIGHT_TIMEOUTS", "HEYGEM_PREFLIGHT_TIMEOUT"),
        ("HEYGEM_GPU", "HEYGEM_GPUS"),
        ("HEYGEM_STALL", "HEYGEM_STALL_SECONDS"),  # cut short: the one setting it begins
        ("HEYGEM_METRIC_PORT", "HEYGEM_METRICS_PORT"),
        ("HEYGEM_APP_COMAND", "HEYGEM_APP_COMMAND"),
        # Found by a newcomer: the shared prefix made any short name "close" to HEYGEM_GPUS.
        ("HEYGEM_X", None),
        ("HEYGEM_CUDA", None),
        ("HEYGEM_APP", None),  # begins four settings: no guess
        ("HEYGEM_CONDA", None),
    ],
)
def test_closest_key(typo: str, known: str | None) -> None:
    assert closest_key(typo) == known


def test_this_projects_other_variables_are_no_typo_in_the_environment_and_said_useless_in_the_env_file() -> None:
    """HEYGEM_DEBUG (the launcher's own switch) and docker compose's HEYGEM_PORT/HEYGEM_IMAGE/... in the shell
    are no unknown settings (before: "unknown setting HEYGEM_DEBUG; did you mean HEYGEM_GPUS?"); in the .env
    file they do nothing, and the warning says what they are."""
    from launcher.config.settings import NOT_SETTINGS, unknown_key_warnings

    environ = {key: "1" for key in NOT_SETTINGS}
    assert unknown_key_warnings({}, environ) == []
    assert unknown_key_warnings({"HEYGEM_PORT": "8080", "HEYGEM_DEBUG": "1"}, {}) == [
        "HEYGEM_PORT in the .env file has no effect: it is docker/compose*.yml's variable (the published port); "
        "the app's port is HEYGEM_APP_PORT",
        "HEYGEM_DEBUG in the .env file has no effect: it is read from the environment only (an internal error's "
        "traceback)",
    ]
    assert unknown_key_warnings({}, {"HEYGEM_STALL": "3", "OTHER": "x"}) == [
        "unknown setting HEYGEM_STALL in the environment; did you mean HEYGEM_STALL_SECONDS?"
    ]
