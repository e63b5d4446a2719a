"""Issue 8, items 1 and 2: another local user (a real one, `useradd`) can neither steer root's `restart`,
`status` and probes at a process of their choosing, nor load a library of theirs into any process the
launcher starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.preflight.libpath import build_library_path, unsafe_folder
from launcher.preflight.loaderenv import launcher_child_env, safe_loader_env
from launcher.system.rundir import RunDir, running_pid, write_pidfile
from tests import harness
from tests.conftest import LAUNCH, clean_environ
from tests.harness import environ_of, wait_for
from tests.otheruser import as_other, other_user


def start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A root process the attacker would like root's `restart` to signal."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder in /tmp that both users can reach (pytest's own tmp is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="heygem-trust-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def forge(run_dir: Path, pid: int, user) -> None:  # type: ignore[no-untyped-def]
    """As the other user: a run dir with a pid file naming `pid` and a restart answer saying ok."""
    pidfile = json.dumps({"pid": pid, "pid_ns": os.readlink("/proc/self/ns/pid"), "start": start_ticks(pid)})
    answer = json.dumps({"ok": True, "exit_code": 0, "message": "forged ok", "requested_at": 9e12, "id": None})
    as_other(
        f"mkdir -p {run_dir} && cd {run_dir} && printf '%s' '{pidfile}' > heygem-launch.pid"
        f" && printf '%s' '{answer}' > restart.json",
        user,
    )


def client(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ(HEYGEM_RUN_DIR=str(run_dir))
    return subprocess.run([*LAUNCH, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_root_restart_ignores_a_run_dir_another_user_owns(shared_tmp: Path, victim) -> None:  # type: ignore[no-untyped-def]
    """The handed case: the other user's run dir names a root process; root's restart must not signal it."""
    user = other_user()
    shared_tmp.chmod(0o1777)  # like /tmp: anyone may create their folder there
    run_dir = shared_tmp / "run"
    forge(run_dir, victim.pid, user)
    for args in (("restart",), ("status",), ("status", "--json")):
        result = client(run_dir, *args)
        assert result.returncode == 78, result
        assert "not trusted" in result.stderr and f"uid {user.pw_uid}" in result.stderr
        assert "forged ok" not in result.stdout + result.stderr
    probe = client(run_dir, "probe", "live")
    assert probe.returncode == 1 and "not running" in probe.stdout
    time.sleep(0.2)
    assert victim.poll() is None, "the victim was signalled"


def test_root_owned_run_dir_that_others_can_write_is_not_trusted(shared_tmp: Path, victim) -> None:  # type: ignore[no-untyped-def]
    user = other_user()
    run_dir = shared_tmp / "run"
    run_dir.mkdir()
    run_dir.chmod(0o777)
    forge(run_dir, victim.pid, user)  # files the other user could write into a root folder
    result = client(run_dir, "restart")
    assert result.returncode == 78 and "writable by others" in result.stderr
    assert victim.poll() is None


def test_files_another_user_owns_in_a_root_run_dir_are_ignored(shared_tmp: Path, victim) -> None:  # type: ignore[no-untyped-def]
    """A root folder (0755), but the pid file in it belongs to the other user (e.g. left by a chown)."""
    user = other_user()
    run_dir = shared_tmp / "run"
    run_dir.mkdir(mode=0o755)
    (run_dir / "heygem-launch.pid").write_text(
        json.dumps({"pid": victim.pid, "pid_ns": os.readlink("/proc/self/ns/pid"), "start": start_ticks(victim.pid)})
    )
    os.chown(run_dir / "heygem-launch.pid", user.pw_uid, user.pw_gid)
    result = client(run_dir, "restart")
    assert result.returncode == 69 and "not running" in result.stderr
    assert victim.poll() is None


def test_a_pid_that_is_not_heygem_launch_of_this_run_dir_is_never_signalled(tmp_path: Path, victim) -> None:  # type: ignore[no-untyped-def]
    """Root's own run dir, a pid file with a valid start time, but the process is a `sleep`: not ours."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "heygem-launch.pid").write_text(
        json.dumps({"pid": victim.pid, "pid_ns": os.readlink("/proc/self/ns/pid"), "start": start_ticks(victim.pid)})
    )
    (run_dir / "heygem-launch.pid").chmod(0o600)
    assert running_pid(RunDir(run_dir)) is None
    result = client(run_dir, "restart")
    assert result.returncode == 69
    assert victim.poll() is None


def test_the_pid_must_hold_this_run_dirs_pid_file(tmp_path: Path) -> None:
    """This process writes the pid file and holds it: it is found. A copy of the file elsewhere, naming the
    same process, is not (the process does not hold that copy open). This test's own process stands in for
    heygem-launch here only for the is-it-a-launcher check, which is skipped by asserting `holds` directly."""
    from launcher.system.rundir import holds

    run = RunDir(tmp_path / "a")
    run.path.mkdir(mode=0o700)
    fd = write_pidfile(run)
    try:
        assert holds(os.getpid(), run.pidfile)
        other = RunDir(tmp_path / "b")
        other.path.mkdir(mode=0o700)
        shutil.copy(run.pidfile, other.pidfile)
        assert not holds(os.getpid(), other.pidfile)
    finally:
        os.close(fd)


# -- item 2: the loader ---------------------------------------------------------------------------------


def test_child_environment_has_no_empty_relative_entries_nor_preloads(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    env = {
        "LD_LIBRARY_PATH": f":{lib}::rel:{lib}",
        "LD_PRELOAD": "/tmp/evil.so",
        "LD_AUDIT": "/tmp/audit.so",
        "HEYGEM_RUN_DIR": "/x",
        "PATH": "/usr/bin",
    }
    out = launcher_child_env(env)
    assert out == {"LD_LIBRARY_PATH": str(lib), "PATH": "/usr/bin"}


def test_world_writable_parent_and_symlinked_library_are_unsafe(tmp_path: Path) -> None:
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)  # no sticky bit: anyone can replace what is below
    (open_parent / "lib").mkdir()
    assert "above it is world-writable" in (unsafe_folder(str(open_parent / "lib")) or "")

    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    (planted / "libcuda.so.1").write_bytes(b"\x7fELF")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libcuda.so.1").symlink_to(planted / "libcuda.so.1")
    assert "points to" in (unsafe_folder(str(lib)) or "")
    with pytest.raises(ConfigError, match="unsafe"):
        build_library_path(tmp_path / "env", [str(lib)], "")
    with pytest.raises(ConfigError, match="unsafe"):
        safe_loader_env({"LD_LIBRARY_PATH": str(lib)}, strict=True)


def test_a_folder_another_user_made_in_tmp_is_unsafe(shared_tmp: Path) -> None:
    user = other_user()
    shared_tmp.chmod(0o1777)  # like /tmp: sticky and world-writable
    as_other(f"mkdir -m 755 {shared_tmp}/x", user)
    reason = unsafe_folder(str(shared_tmp / "x"))
    assert reason and f"uid {user.pw_uid}" in reason


def test_planted_libc_in_the_app_dir_reaches_no_process(shared_tmp: Path, ort_env: Path) -> None:
    """The handed case: LD_LIBRARY_PATH=':/tmp/x::rel' and a libc.so.6 planted in the app dir (by another
    user, who may write there). Every process the launcher starts (supervisord, the wrapper in the app dir,
    the probe, the app) runs, and none maps the planted file nor gets a loader variable."""
    user = other_user()
    tmp_path = shared_tmp
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    app_dir.chmod(0o777)
    # Not an ELF at all: a loader that looked in the app dir would fail to start the process.
    as_other(f"printf 'not a library' > {app_dir}/libc.so.6 && printf x > {app_dir}/libpthread.so.0", user)
    service = harness.start(
        tmp_path,
        ort_env,
        env={
            "LD_LIBRARY_PATH": ":/tmp/x::rel",
            "LD_PRELOAD": f"{app_dir}/libc.so.6",
            "LD_AUDIT": "x.so",
            "HEYGEM_APP_DIR": str(app_dir),
        },
        # The launcher's own process starts elsewhere: what its caller's loader does to it is not ours to fix.
        # ld.so still complains about LD_PRELOAD/LD_AUDIT for the launcher itself, and ignores them.
        cwd=tmp_path,
    )
    try:
        info = service.wait_app(timeout=60)
        launcher = service.proc.pid
        supervisord = wait_for(lambda: harness._first_child(launcher), 5, "supervisord")
        wrapper = procs_parent(info["pid"])
        for pid in (supervisord, wrapper, info["pid"]):
            env = environ_of(pid)
            assert "LD_PRELOAD" not in env and "LD_AUDIT" not in env, (pid, env)
            entries = env.get("LD_LIBRARY_PATH", "/x").split(":")
            assert all(entry.startswith("/") for entry in entries), (pid, entries)
            assert not any(k.startswith("HEYGEM_") for k in env), (pid, sorted(env))
            assert str(app_dir / "libc.so.6") not in Path(f"/proc/{pid}/maps").read_text()
        assert "removed LD_PRELOAD" in service.stderr() or "LD_PRELOAD" in service.stderr()
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=20) == 0
    finally:
        service.cleanup()


def procs_parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_activate_scripts_and_the_probe_get_a_loader_safe_environment(tmp_path: Path) -> None:
    """The activate.d shell runs in the app dir: it must not search it for libraries either, nor preload."""
    from launcher.config.settings import build_settings
    from launcher.preflight.appenv import prepare_environment
    from tests import envs

    prefix = envs.make_venv(tmp_path / "envs" / "human")
    seen = tmp_path / "seen.txt"
    envs.make_conda(prefix, {}, f'echo "${{LD_LIBRARY_PATH-unset}}|${{LD_PRELOAD-unset}}" > {seen}\n')
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    settings = build_settings(
        {}, {"HEYGEM_CONDA_ENV": str(prefix), "HEYGEM_RUN_DIR": str(tmp_path / "run")}, {}, cwd=app_dir
    )
    app = prepare_environment(settings, {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ":rel::", "LD_PRELOAD": "/x.so"})
    assert seen.read_text() == "unset|unset\n"  # nothing but empty and relative entries: no LD_LIBRARY_PATH
    assert "LD_PRELOAD" not in app.env
    assert all(entry.startswith("/") for entry in app.env.get("LD_LIBRARY_PATH", "/").split(":"))
    assert any("LD_PRELOAD" in warning for warning in app.warnings)
