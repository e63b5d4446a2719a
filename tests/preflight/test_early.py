"""The early probe (launcher/preflight/early.py): `--check-only`'s probe started before the settings are read, and
adopted only when it is exactly the probe the full calculation (`appenv.prepare_environment`) would start.

Real child processes. The envs here are folders with a `bin/python`: the launcher's own interpreter where the
probe's report matters (onnxruntime-gpu's CPU provider; no GPU needed), a shell script that sleeps where only
the process matters (whether it is killed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from launcher.config.settings import load_settings
from launcher.config.specs import SPECS
from launcher.errors import ConfigError
from launcher.preflight import early
from launcher.preflight.appenv import AUDIT_SOCKET_VARIABLE, prepare_environment
from launcher.preflight.check import run_preflight
from launcher.preflight.probe import ProbeRun
from tests.conftest import LAUNCH, clean_environ
from tests.harness import gone, wait_for

CPU = "CPUExecutionProvider"
BASE = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


@pytest.fixture(autouse=True)
def _no_leftover() -> object:
    yield
    early.discard()


def make_env(prefix: Path, *, conda: bool = True, python: str | None = None) -> Path:
    """An env folder: bin/python (a link to this interpreter, or the given script), lib/, NVIDIA wheels' lib
    folders in a python3.8 site-packages, conda-meta/ when `conda`."""
    (prefix / "bin").mkdir(parents=True)
    if python is None:
        (prefix / "bin" / "python").symlink_to(sys.executable)
    else:
        (prefix / "bin" / "python").write_text(python)
        (prefix / "bin" / "python").chmod(0o755)
    site = prefix / "lib" / "python3.8" / "site-packages"
    for lib in ("cudnn", "cublas", "cu13"):
        (site / "nvidia" / lib / "lib").mkdir(parents=True)
    (site / "nvidia" / "no_lib_here").mkdir()
    if conda:
        (prefix / "conda-meta").mkdir()
    return prefix


SLEEPER = '#!/bin/bash\nexec -a "$0" sleep 30\n'  # a python that only sleeps, its script's path as its argv[0]


def running(python: Path) -> list[int]:
    """Live processes whose argv[0] is `python` (the SLEEPER keeps it)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv0 = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0 == str(python).encode() and not gone(int(name)):
            found.append(int(name))
    return found


def full(flags: Mapping[str, str], environ: Mapping[str, str], cwd: Path) -> tuple[str, str, dict[str, str], str]:
    """What the full preflight starts its probe with (launcher/preflight/check.py's run_preflight)."""
    settings = load_settings(dict(flags), environ, cwd)
    app = prepare_environment(settings, environ)
    env = {k: v for k, v in app.env.items() if k != AUDIT_SOCKET_VARIABLE}
    return str(app.conda.python), settings.require_provider, env, os.path.realpath(settings.app_dir)


def test_its_defaults_are_the_settings_tables() -> None:
    table = {spec.key: spec.default() for spec in SPECS}
    assert {key: table[key] for key in early.DEFAULTS} == early.DEFAULTS
    assert all(not table.get(key, "") for key in early.DECLINED)


@pytest.fixture
def conda_root(tmp_path: Path) -> Path:
    root = make_env(tmp_path / "conda")
    make_env(root / "envs" / "human")
    venv = make_env(tmp_path / "venv", conda=False)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "app" / "sub").mkdir(parents=True)
    return root


CASES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # name: (flags, environment beyond BASE); {root} and {tmp} are filled in
    "the launcher's own interpreter": ({}, {}),
    "a named conda env": ({}, {"HEYGEM_CONDA_ROOT": "{root}", "HEYGEM_CONDA_ENV": "human"}),
    "conda's base": ({"HEYGEM_CONDA_ROOT": "{root}", "HEYGEM_CONDA_ENV": "base"}, {}),
    "an env's prefix as a flag": ({"HEYGEM_CONDA_ENV": "{root}/envs/human"}, {"HEYGEM_CONDA_ROOT": "{root}"}),
    "a venv's prefix": ({"HEYGEM_CONDA_ENV": "{tmp}/venv"}, {}),
    "replacing the active conda env": (
        {"HEYGEM_CONDA_ENV": "human", "HEYGEM_CONDA_ROOT": "{root}"},
        {"CONDA_PREFIX": "/opt/other", "CONDA_SHLVL": "1", "PATH": "/opt/other/bin:/usr/bin:/bin"},
    ),
    "an inherited library path, with loader variables": (
        {"HEYGEM_CONDA_ENV": "human", "HEYGEM_CONDA_ROOT": "{root}"},
        {"LD_LIBRARY_PATH": "::rel:/usr/lib//:/usr/lib:/nonexistent:{root}/lib", "LD_PRELOAD": "/x.so", "LD_X": "1"},
    ),
    "the app's port and buffering": ({}, {"GRADIO_SERVER_PORT": "08000", "PYTHONUNBUFFERED": "0"}),
    "a port that is none": ({}, {"GRADIO_SERVER_PORT": "seventy"}),
    "the audit off, a PYTHONPATH": ({}, {"HEYGEM_SESSION_AUDIT": "off", "PYTHONPATH": "/a::/b"}),
    "the audit on, a PYTHONPATH": ({}, {"PYTHONPATH": "/a::/b:/a"}),
    "ORT's kill switch": ({}, {"ORT_CUDA_UNAVAILABLE": "1"}),
    "a relative app dir, another provider": ({"HEYGEM_APP_DIR": "sub"}, {"HEYGEM_REQUIRE_PROVIDER": CPU}),
    "settings that do not reach the probe": ({"HEYGEM_STOP_GRACE": "5"}, {"HEYGEM_MAX_RESTARTS": "3"}),
}


@pytest.mark.parametrize("case", CASES)
def test_it_computes_the_probe_the_full_preflight_starts(case: str, conda_root: Path, tmp_path: Path) -> None:
    def fill(values: dict[str, str]) -> dict[str, str]:
        return {k: v.format(root=conda_root, tmp=tmp_path) for k, v in values.items()}

    flags, extra = CASES[case]
    environ = {**BASE, **fill(extra)}
    cwd = tmp_path / "app"
    inputs = early.probe_inputs(fill(flags), environ, str(cwd))
    assert inputs is not None
    python, provider, env, workdir = inputs
    assert (python, provider, env, os.path.realpath(workdir)) == full(fill(flags), environ, cwd)


DECLINES: dict[str, dict[str, str]] = {
    "one app per GPU": {"HEYGEM_GPUS": "1"},
    "extra library folders": {"HEYGEM_EXTRA_LIBRARY_PATH": "/usr/lib"},
    "its own port": {"HEYGEM_APP_PORT": "8000"},
    "an env file named": {"HEYGEM_ENV_FILE": "/etc/hostname"},
    "no preflight": {"HEYGEM_PREFLIGHT": "skip"},
    "an env that is not there": {"HEYGEM_CONDA_ENV": "nosuch", "HEYGEM_CONDA_ROOT": "{root}"},
    "an env under ~": {"HEYGEM_CONDA_ENV": "~/env"},
    "an env with activate.d": {"HEYGEM_CONDA_ENV": "human", "HEYGEM_CONDA_ROOT": "{root}", "ACTIVATE_D": "1"},
    "an env with conda's env vars": {"HEYGEM_CONDA_ENV": "human", "HEYGEM_CONDA_ROOT": "{root}", "STATE": "1"},
    "a world-writable library folder": {"LD_LIBRARY_PATH": "{tmp}/open"},
    "bytes that are not UTF-8": {"X": "\udcff"},
    "an app dir that is not there": {"HEYGEM_APP_DIR": "{tmp}/gone"},
}


@pytest.mark.parametrize("case", DECLINES)
def test_it_declines_what_only_the_full_calculation_follows(
    case: str, conda_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is started: the full preflight starts its own probe, or refuses (the unsafe folder: ConfigError,
    78, before any probe ran, as the full calculation says)."""
    environ = {**BASE, **{k: v.format(root=conda_root, tmp=tmp_path) for k, v in DECLINES[case].items()}}
    human = conda_root / "envs" / "human"
    if environ.pop("ACTIVATE_D", None):
        (human / "etc" / "conda" / "activate.d").mkdir(parents=True)
        (human / "etc" / "conda" / "activate.d" / "x.sh").write_text("export X=1\n")
    if environ.pop("STATE", None):
        (human / "conda-meta" / "state").write_text('{"env_vars": {"X": "1"}}')
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    monkeypatch.chdir(tmp_path / "app")
    early.start({}, environ)
    assert not early.pending()


def test_an_env_file_beside_it_declines(conda_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app" / ".env").write_text("GRADIO_SERVER_PORT=9000\n")
    monkeypatch.chdir(tmp_path / "app")
    early.start({}, BASE)
    assert not early.pending()


def test_the_unsafe_folder_it_declines_is_refused_by_the_full_calculation(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "app").mkdir()
    with pytest.raises(ConfigError, match="is unsafe"):
        full({}, {**BASE, "LD_LIBRARY_PATH": str(tmp_path / "open")}, tmp_path / "app")


def test_the_preflight_adopts_the_early_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started early, claimed by the preflight's ProbeRun (not a second probe), and its report is the probe's:
    onnxruntime's CPU provider ran the test inference in the launcher's own interpreter."""
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    environ = {**clean_environ(), "HEYGEM_REQUIRE_PROVIDER": CPU}
    early.start({}, environ)
    assert early.pending()
    started = early._STARTED[0]
    claimed: list[early.EarlyProbe | None] = []
    claim = early.claim
    monkeypatch.setattr(early, "claim", lambda *a: claimed.append(claim(*a)) or claimed[-1])
    check = run_preflight(load_settings({}, environ, tmp_path / "app"), environ, start=False)
    assert claimed == [started] and not early.pending()
    assert check.probe.ok, check.probe.output
    assert check.probe.report["session_providers"][0] == CPU
    assert not os.path.exists(started.folder) and gone(started.pid)


def test_a_different_early_probe_is_killed_and_the_right_one_started(tmp_path: Path) -> None:
    """An early probe whose environment differs in one variable from the one asked for: killed (its python
    sleeps, so only a kill ends it), its folder removed; the ProbeRun starts its own."""
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    python = str(env / "bin" / "python")
    early._STARTED.append(early.EarlyProbe(python, CPU, {"PATH": "/usr/bin:/bin", "A": "1"}, str(tmp_path / "app")))
    stale = early._STARTED[0]
    run = ProbeRun(Path(python), {"PATH": "/usr/bin:/bin", "A": "2"}, tmp_path / "app", CPU, 30)
    try:
        assert gone(stale.pid) and not os.path.exists(stale.folder)
        wait_for(lambda: len(running(env / "bin" / "python")) == 1, 5, "the ProbeRun's own probe")
        assert stale.pid not in running(env / "bin" / "python")
    finally:
        run.kill()


def test_a_refusal_before_the_probe_kills_the_early_probe(tmp_path: Path) -> None:
    """`--check-only` refused for a bad setting (78) once the early probe runs: nothing of it outlives the
    launcher (the probe's python sleeps here, in its own session, out of reach of the launcher's group)."""
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    environ = clean_environ(HEYGEM_CONDA_ENV=str(env), HEYGEM_STOP_GRACE="soon", TMPDIR=str(tmp_path))
    done = subprocess.run([*LAUNCH, "--check-only"], cwd=tmp_path / "app", env=environ, capture_output=True, text=True)
    assert done.returncode == 78, done.stderr
    assert "HEYGEM_STOP_GRACE" in done.stderr and "Traceback" not in done.stderr
    assert not running(env / "bin" / "python")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("heygem-probe-")]


def test_the_check_adopts_it_end_to_end(tmp_path: Path) -> None:
    """The real command runs one probe, and it is the early one: its report folder is early.py's
    (`heygem-probe-<launcher's pid>-<hex>`, where tempfile's names have no dash). The env's python is this
    interpreter behind a script that records each start: its parent's pid and its arguments."""
    script = f'#!/bin/sh\necho "$PPID $2" >> {tmp_path}/starts\nexec {sys.executable} "$@"\n'
    env = make_env(tmp_path / "env", conda=False, python=script)
    (tmp_path / "app").mkdir()
    environ = clean_environ(HEYGEM_CONDA_ENV=str(env), HEYGEM_REQUIRE_PROVIDER=CPU, HEYGEM_APP_COMMAND="sleep 1")
    done = subprocess.run(
        [*LAUNCH, "--check-only", "--json"], cwd=tmp_path / "app", env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (start,) = (tmp_path / "starts").read_text().splitlines()
    parent, report = start.split(" ", 1)
    assert f"/heygem-probe-{parent}-" in report


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_deadly_signal_before_the_check_handles_signals_kills_the_early_probe(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """Between the early probe's start and commands/check.py's handlers, SIGTERM or SIGHUP ends the launcher as
    it always did (by the signal), and takes the probe (in its own session) with it. A real process and signal."""
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    code = (
        "import os, sys, time\n"
        "from launcher.preflight import early\n"
        f"early.start({{'HEYGEM_CONDA_ENV': {str(env)!r}}}, os.environ)\n"
        "print(early._STARTED[0].pid, early._STARTED[0].folder, flush=True)\n"
        f"os.kill(os.getpid(), {int(signum)})\n"
        "time.sleep(10)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "app", env=clean_environ(), capture_output=True, text=True
    )
    assert done.returncode == -signum, done.stderr
    pid, folder = done.stdout.split()
    assert gone(int(pid)) and not running(env / "bin" / "python") and not os.path.exists(folder)


def test_a_report_folder_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    """Another user who can write TMPDIR replaces the probe's folder with a link: the cleanup refuses the link
    (shutil.rmtree's rule) and the folder it points to keeps everything."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "a.txt").write_text("a")
    (victim / "sub" / "b.txt").write_text("b")
    (tmp_path / "heygem-probe-1-00").symlink_to(victim)
    early.remove_folder(str(tmp_path / "heygem-probe-1-00"))
    assert (victim / "a.txt").exists() and (victim / "sub" / "b.txt").exists()


def launch_with_signal(tmp_path: Path, signum: int, **extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`--check-only` run in a python whose posix_spawn sends `signum` to the launcher right after the early probe
    is spawned: the signal lands in the narrowest window there is. The probe's python sleeps."""
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    code = (
        "import os, sys\n"
        "spawn = os.posix_spawn\n"
        "def signalled(*args, **kwargs):\n"
        "    pid = spawn(*args, **kwargs)\n"
        f"    os.kill(os.getpid(), {signum})\n"
        "    return pid\n"
        "os.posix_spawn = signalled\n"
        "sys.argv = ['heygem-launch', '--check-only']\n"
        "from launcher.__main__ import main\n"
        "main()\n"
    )
    environ = clean_environ(HEYGEM_CONDA_ENV=str(env), TMPDIR=str(tmp_path), **extra)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "app", env=environ, capture_output=True, text=True, timeout=60
    )
    return done, env / "bin" / "python"


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGHUP, -signal.SIGHUP), (signal.SIGINT, 130)]
)
def test_a_signal_during_the_spawn_leaves_no_probe(signum: int, code: int, tmp_path: Path) -> None:
    """Blocked until the probe is on record, then handled: the probe is killed, its folder removed, and the
    launcher ends as that signal ends it (SIGINT: 130 without a traceback, as plain() says it)."""
    done, python = launch_with_signal(tmp_path, signum)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert not running(python) and not list(tmp_path.glob("heygem-probe-*"))


def test_a_stray_signal_in_the_early_window_is_said_and_ignored(tmp_path: Path) -> None:
    """SIGUSR1 (the service's stray signals) right after the spawn: one line, the check goes on to its verdict
    (the sleeping probe times out: 69), nothing left behind."""
    done, python = launch_with_signal(tmp_path, signal.SIGUSR1, HEYGEM_PREFLIGHT_TIMEOUT="1")
    assert done.returncode == 69, done.stderr
    assert "heygem-launch: SIGUSR1" in done.stderr and "probe_timeout" in done.stdout
    assert not running(python) and not list(tmp_path.glob("heygem-probe-*"))


def sleeping_check(tmp_path: Path, *, nohup: bool = False) -> tuple[subprocess.Popen[str], Path]:
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    environ = clean_environ(HEYGEM_CONDA_ENV=str(env), TMPDIR=str(tmp_path), HEYGEM_PREFLIGHT_TIMEOUT="3")
    cmd = ["nohup", *LAUNCH, "--check-only"] if nohup else [*LAUNCH, "--check-only"]
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path / "app", env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: running(env / "bin" / "python"), 10, "the probe")
    return launcher, env / "bin" / "python"


def test_sighup_during_the_preflight_stops_it_with_its_probe(tmp_path: Path) -> None:
    """The probe adopted, SIGHUP: said, exit 129, the probe killed (before, SIGHUP's default action ended the
    launcher and left the probe running in its own session)."""
    launcher, python = sleeping_check(tmp_path)
    time.sleep(1)  # the preflight waits on it by now (before, the early window's own handler: see above)
    launcher.send_signal(signal.SIGHUP)
    _out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 129, err
    assert "SIGHUP during the preflight: the probe was stopped" in err
    assert not running(python) and not list(tmp_path.glob("heygem-probe-*"))


def test_under_nohup_sighup_changes_nothing(tmp_path: Path) -> None:
    """SIGHUP ignored when the launcher starts (nohup) stays ignored: the check runs to its verdict (the sleeping
    probe's timeout, 69)."""
    launcher, python = sleeping_check(tmp_path, nohup=True)
    for _ in range(2):  # in the early window, then while the preflight waits
        launcher.send_signal(signal.SIGHUP)
        time.sleep(1)
    _out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 69, err
    assert not running(python)


def test_the_early_probe_inherits_no_fd_beyond_its_three(tmp_path: Path) -> None:
    """An fd the launcher was handed (here 5, as `5>file` would) is not the probe's, as with Popen's close_fds."""
    env = make_env(tmp_path / "env", conda=False, python=SLEEPER)
    (tmp_path / "app").mkdir()
    handed = os.open(tmp_path / "handed", os.O_WRONLY | os.O_CREAT)
    try:
        os.set_inheritable(handed, True)
        launcher = subprocess.Popen(
            [*LAUNCH, "--check-only"],
            cwd=tmp_path / "app",
            env=clean_environ(HEYGEM_CONDA_ENV=str(env), HEYGEM_PREFLIGHT_TIMEOUT="3"),
            pass_fds=(handed,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(handed)
    try:
        (probe,) = wait_for(lambda: running(env / "bin" / "python"), 10, "the probe")
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{probe}/fd")) == [0, 1, 2]
    finally:
        launcher.wait(timeout=30)
