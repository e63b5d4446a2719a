"""Issue 8, items 10 and 12: a run dir that is read-only or fills up, and SIGTERM during the preflight, end in
a clean stop with one clear line and nothing left running (no app, no supervisord, no probe)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import envs, harness
from tests.harness import gone, wait_for


def can_mount() -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", "--version"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs as the run dir")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[[Path, str], Path]]:
    """Mount a tmpfs (real ENOSPC and EROFS, no fake) at a path; unmounted at the end."""
    points: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        points.append(path)
        return path

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)


def descendants_gone(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


@needs_mount
def test_read_only_run_dir_at_start_exits_78_before_anything_starts(tmp_path: Path, ort_env: Path, mounted) -> None:  # type: ignore[no-untyped-def]
    run_dir = mounted(tmp_path / "run", "size=1m,mode=0700")
    subprocess.run(["mount", "-o", "remount,ro", str(run_dir)], check=True)
    service = harness.start(tmp_path, ort_env)
    try:
        assert service.wait(timeout=60) == 78
        err = service.stderr()
        assert "HEYGEM_RUN_DIR" in err and "Read-only file system" in err, err
        assert "Traceback" not in err
        assert not (service.app_dir / "log").exists()  # the app never started
    finally:
        service.cleanup()


@needs_mount
def test_full_run_dir_stops_app_and_supervisord_cleanly(tmp_path: Path, ort_env: Path, mounted) -> None:  # type: ignore[no-untyped-def]
    run_dir = mounted(tmp_path / "run", "size=2m,mode=0700")
    service = harness.start(tmp_path, ort_env)
    try:
        info = service.wait_app()
        supervisord = harness._first_child(service.proc.pid)
        assert supervisord is not None
        pids = [supervisord, info["pid"], *info["workers"]]
        # Fill it: the next write of state (here: a restart's new generation) meets ENOSPC.
        subprocess.run(["dd", "if=/dev/zero", f"of={run_dir}/filler", "bs=64k"], capture_output=True, check=False)
        service.signal(signal.SIGHUP)
        assert service.wait(timeout=60) == 70
        err = service.stderr()
        line = next(line for line in err.splitlines() if "No space left on device" in line)
        assert "cannot write" in line and "stopping the app and supervisord" in line, line
        assert "Traceback" not in err and "internal error" not in err
        wait_for(lambda: descendants_gone(pids), 10, "supervisord, the app and its workers to be gone")
    finally:
        service.cleanup()


@pytest.fixture(scope="module")
def hanging_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv whose python hangs at start (a .pth line sleeps): the probe hangs as a stuck CUDA init
    would."""
    prefix = envs.make_venv(tmp_path_factory.mktemp("envs") / "hang")
    (envs.site_of(prefix) / "zz_hang.pth").write_text("import time; time.sleep(600)\n")
    return prefix


def probe_of(env: Path) -> int | None:
    """The probe: `ENV/bin/python -` started by the launcher."""
    return next(iter(harness.probes_of(env)), None)


@contextlib.contextmanager
def hanging_preflight(tmp_path: Path, hanging_env: Path) -> Iterator[tuple[harness.Service, int]]:
    """heygem-launch in its preflight, its probe hung (and so held there): the service and the probe's pid.
    Whatever the test does, nothing of either is left after it."""
    service = harness.start(tmp_path, hanging_env, env={"HEYGEM_PREFLIGHT_TIMEOUT": "300"})
    try:
        probe = wait_for(lambda: probe_of(hanging_env), 30, "the probe to start")
        time.sleep(0.3)
        yield service, probe
    finally:
        service.cleanup()
        pid = probe_of(hanging_env)
        if pid:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_preflight_kills_the_probe_and_exits_128_plus_n(
    tmp_path: Path, hanging_env: Path, signum: int
) -> None:
    """Outside tini (no group signal, no PID namespace): the probe is in its own session, so only the launcher
    can stop it."""
    with hanging_preflight(tmp_path, hanging_env) as (service, probe):
        os.kill(service.proc.pid, signum)
        assert service.wait(timeout=20) == 128 + signum
        name = signal.Signals(signum).name
        err = service.stderr()
        assert f"{name} during the preflight: the probe was stopped and the app not started" in err, err
        assert "Traceback" not in err
        wait_for(lambda: gone(probe), 5, "the probe to be gone")


def test_a_stray_signal_during_the_preflight_is_said_and_ignored(tmp_path: Path, hanging_env: Path) -> None:
    """Issue 20, case 12, before the service loop takes over signals: USR1 (reopen logs, by habit), QUIT and ALRM
    killed the launcher at once with no line, the probe left running in its own session."""
    with hanging_preflight(tmp_path, hanging_env) as (service, probe):
        for signum in (signal.SIGUSR1, signal.SIGQUIT, signal.SIGALRM):
            os.kill(service.proc.pid, signum)
        wait_for(lambda: service.stderr().count(" ignored: heygem-launch stops on SIGTERM") == 3, 10, "three lines")
        service.assert_alive()
        os.kill(service.proc.pid, signal.SIGTERM)
        assert service.wait(timeout=20) == 128 + signal.SIGTERM
        assert "Traceback" not in service.stderr()
        wait_for(lambda: gone(probe), 5, "the probe to be gone")
