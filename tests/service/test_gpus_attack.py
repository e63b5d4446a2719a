"""An app per GPU, attacked: bad HEYGEM_GPUS values, ports that collide, apps given up under each policy, the
stop of several apps, restarts that change the number of apps, `doctor` over several apps, and the way back to
one app.

Real processes throughout: the installed `heygem-launch`, real supervisord, the HeyGem-like app
(tests/heygem_like_app.py) run twice on this CPU machine with HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider
(`launch_service`, TEST_APP_SPEED=20), real signals, /proc. No stand-in: nothing here needs a GPU inventory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import harness
from tests.conftest import LAUNCH, assert_no_traceback, clean_environ
from tests.harness import APP, control, environ_of, wait_for

CPU = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider"}
STOP_GRACE = 3  # HEYGEM_STOP_GRACE in harness.start


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free (the apps get HEYGEM_APP_PORT + i)."""
    return harness.free_ports(2)


def _env(port: int, **extra: str | None) -> dict[str, str | None]:
    return {"HEYGEM_GPUS": "2", "HEYGEM_APP_PORT": str(port), "GRADIO_SERVER_PORT": None, **extra}


def _status(svc: harness.Service) -> dict:  # type: ignore[type-arg]
    result = control(svc, "status", "--json")
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def _programs(svc: harness.Service) -> dict[str, dict]:  # type: ignore[type-arg]
    return {p["name"]: p for p in _status(svc)["programs"]}


def _answer(svc: harness.Service, port: int, not_pid: int | None = None) -> dict:  # type: ignore[type-arg]
    """The app on `port` once it answers (with a pid other than `not_pid`)."""

    def answered() -> dict | None:  # type: ignore[type-arg]
        svc.assert_alive()
        info = harness.get(port)
        return info if info and info.get("pid") != not_pid else None

    return wait_for(answered, 30, f"the app on port {port}" + (f" (not pid {not_pid})" if not_pid else ""))


def _in_app_dir(app_dir: Path) -> list[int]:
    """Every live process (zombies aside) whose working directory is the app dir: the apps, their wrappers
    and their workers."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/cwd") == str(app_dir) and not harness.gone(int(name)):
                found.append(int(name))
        except OSError:
            continue
    return found


def _switch_app(tmp_path: Path) -> Path:
    """The HeyGem-like app, with TEST_APP_MODE chosen per GPU: TEST_APP_MODE_GPU<N> for the app whose
    CUDA_VISIBLE_DEVICES is N (so one of two apps can crash while the other runs normally)."""
    script = tmp_path / "switch_app.py"
    script.write_text(
        "import os, sys\n"
        "mode = os.environ.get('TEST_APP_MODE_GPU' + os.environ.get('CUDA_VISIBLE_DEVICES', 'x'))\n"
        "if mode:\n"
        "    os.environ['TEST_APP_MODE'] = mode\n"
        f"os.execv(sys.executable, [sys.executable, {str(APP)!r}])\n"
    )
    return script


def _check_only(tmp_path: Path, *args: str, env_file: str | None = None, **env: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    app = tmp_path / "checkapp"
    app.mkdir(exist_ok=True)
    (app / "app.py").write_text("print('app')\n")
    environ = clean_environ(HEYGEM_RUN_DIR=str(tmp_path / "run"), **env)
    if env_file is not None:
        (tmp_path / "check.env").write_text(env_file)
        environ["HEYGEM_ENV_FILE"] = str(tmp_path / "check.env")
    return subprocess.run(
        [*LAUNCH, "--check-only", *args], env=environ, cwd=app, capture_output=True, text=True, timeout=120
    )


# -- bad values: one line naming the key, exit 78 ------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "env_file", "needle"),
    [
        ({"HEYGEM_GPUS": "0"}, None, "HEYGEM_GPUS='0'"),
        ({"HEYGEM_GPUS": "1,1"}, None, "HEYGEM_GPUS='1,1'"),
        ({"HEYGEM_GPUS": "0,,1"}, None, "HEYGEM_GPUS='0,,1'"),
        ({"HEYGEM_GPUS": "all,0"}, None, "HEYGEM_GPUS='all,0'"),
        ({"HEYGEM_GPUS": "0\n1"}, None, "HEYGEM_GPUS="),
        ({"HEYGEM_GPUS": "65"}, None, "HEYGEM_GPUS='65'"),
        ({"HEYGEM_GPU_POLICY": "most"}, None, "HEYGEM_GPU_POLICY='most'"),
        ({"HEYGEM_GPUS": "all", "CUDA_VISIBLE_DEVICES": ""}, None, "HEYGEM_GPUS=all"),
        ({"HEYGEM_GPUS": "all", "CUDA_VISIBLE_DEVICES": "-1"}, None, "HEYGEM_GPUS=all"),
        ({"HEYGEM_GPUS": "3", "CUDA_VISIBLE_DEVICES": "3,5"}, None, "HEYGEM_GPUS=3"),
        ({"HEYGEM_GPUS": "0,2", "CUDA_VISIBLE_DEVICES": "3,5"}, None, "HEYGEM_GPUS: '0'"),
        ({}, "HEYGEM_GPUS=2\nCUDA_VISIBLE_DEVICES=3\n", "HEYGEM_GPUS=2"),
        ({"HEYGEM_GPUS": "2", "HEYGEM_APP_PORT": "65535"}, None, "HEYGEM_GPUS=2"),
        ({"HEYGEM_GPUS": "2", "GRADIO_SERVER_PORT": "65535"}, None, "HEYGEM_GPUS=2"),
        ({}, "HEYGEM_GPUS=2\nGRADIO_SERVER_PORT=65535\n", "HEYGEM_GPUS=2"),
    ],
)
def test_bad_gpu_settings_are_one_line_exit_78(
    tmp_path: Path, env: dict[str, str], env_file: str | None, needle: str
) -> None:
    result = _check_only(tmp_path, env_file=env_file, **CPU, **env)
    assert result.returncode == 78, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"heygem-launch: error: {needle}"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"HEYGEM_GPUS": "\u0662"}, "ARABIC-INDIC DIGIT TWO taken as the count 2"),
        ({"HEYGEM_GPUS": "\u0660,\u0661"}, "ARABIC-INDIC digits taken as GPU indices, handed to CUDA as is"),
        ({"HEYGEM_GPUS": "\u00b2"}, "SUPERSCRIPT TWO: int()'s own message"),
        ({"HEYGEM_GPUS": "all", "CUDA_VISIBLE_DEVICES": "\u0660,\u0661"}, "CUDA reads no digit there: none visible"),
    ],
)
def test_gpus_in_digits_of_other_scripts_are_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], why: str
) -> None:
    """values.whole's own rule (ASCII digits only: int() takes other scripts' digits) must hold for HEYGEM_GPUS
    too. CUDA parses CUDA_VISIBLE_DEVICES with ASCII digits only: `\u0660` is an invalid entry that hides every GPU,
    so an app handed it would run on no GPU at all. Bug: parse_gpus and gpu.visibility use str.isdigit()."""
    result = _check_only(tmp_path, **CPU, **env)
    assert result.returncode == 78, f"{why}: exit {result.returncode}\n{result.stdout[-300:]}{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heygem-launch: error: HEYGEM_GPUS"), result.stderr
    assert "invalid literal" not in result.stderr  # Python's words, not the setting's rule


# -- --check-only on this machine (no driver): each GPU named ---------------------------------------------------
def test_check_only_names_each_gpu_of_the_launchers_own_visible_devices(tmp_path: Path) -> None:
    result = _check_only(tmp_path, "--json", HEYGEM_GPUS="all", CUDA_VISIBLE_DEVICES="3,5")
    assert result.returncode == 69, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["gpu_policy"] == "all" and data["cause"] == "cuda_libraries_missing"
    assert [(i["program"], i["cuda_visible_devices"], i["port"], i["ok"]) for i in data["instances"]] == [
        ("app-0", "3", 7860, False),
        ("app-1", "5", 7861, False),
    ]
    text = _check_only(tmp_path, HEYGEM_GPUS="3,5", CUDA_VISIBLE_DEVICES="3,5", HEYGEM_GPU_POLICY="any")
    assert text.returncode == 69, text.stderr
    assert "app-0   GPU 3" in text.stdout and "app-1   GPU 5" in text.stdout
    assert "HEYGEM_GPU_POLICY=any needs at least one GPU to pass" in text.stdout
    assert_no_traceback(text)  # type: ignore[arg-type]


# -- ports ---------------------------------------------------------------------------------------------------
def test_a_busy_port_of_the_second_app_is_78_naming_its_holder(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port + 1})); s.listen(); "
            "print('up', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
        svc = launch_service(env=_env(port))
        assert svc.wait(timeout=60) == 78
        err = svc.stderr()
        assert f"port {port + 1} " in err and f"pid {holder.pid} " in err
        assert harness.get(port) is None  # app-0 was not started either: no half-started service
        assert _in_app_dir(svc.app_dir) == []
    finally:
        holder.kill()
        holder.wait()


def test_metrics_port_on_the_second_apps_port_is_refused(launch_service) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_METRICS_PORT=HEYGEM_APP_PORT+1 with HEYGEM_GPUS=2. Bug: the ports are checked free before the
    metrics server binds, so the launcher takes app-1's port itself; app-1 (as Gradio does) silently moves to
    the next port, and `probe ready` asks HEAD / of the metrics server, which answers: every probe watches the
    wrong port, the very thing the busy-port refusal exists to prevent. Should: exit 78 naming
    HEYGEM_METRICS_PORT and the app's port, nothing started."""
    port = harness.free_ports(3)  # app-1 moves on to p + 2
    svc = launch_service(env=_env(port, HEYGEM_METRICS_PORT=str(port + 1)))
    wait_for(
        lambda: svc.proc.poll() is not None or "app-1 (GPU 1) started" in svc.stderr(), 60, "an exit or app-1's start"
    )
    if svc.proc.poll() is None:
        app1 = _answer(svc, port + 2)  # where app-1 went
        wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
        pytest.fail(
            f"started anyway: the metrics server holds port {port + 1}, app-1 (pid {app1['pid']}) serves on "
            f"{app1['port']}; probe ready: {control(svc, 'probe', 'ready').stdout.strip()}"
        )
    assert svc.proc.returncode == 78
    assert "HEYGEM_METRICS_PORT" in svc.stderr() and str(port + 1) in svc.stderr()


# -- giving up on one app ----------------------------------------------------------------------------------------
def _kill_until_given_up(svc: harness.Service, port: int, times: int) -> None:
    """SIGKILL the app on `port` `times` times, each time once its successor answers."""
    last: int | None = None
    for _ in range(times):
        info = _answer(svc, port, not_pid=last)
        last = pid = info["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: harness.gone(pid), 10, f"pid {pid} gone")


def test_policy_all_exits_70_naming_the_app_that_restarted_too_often(launch_service) -> None:  # type: ignore[no-untyped-def]
    """Bug: the give-up line is the single app's ("app restarted 3 times ..."): with two apps it does not say
    which one crash-looped (nor its GPU), and its last output is not marked as that app's. Should: name app-1."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, HEYGEM_MAX_RESTARTS="2"))
    _answer(svc, port)
    _kill_until_given_up(svc, port + 1, 3)
    assert svc.wait(timeout=30) == 70
    line = next(x for x in svc.stderr().splitlines() if "HEYGEM_MAX_RESTARTS=2" in x)
    assert "app-1" in line.split("HEYGEM_MAX_RESTARTS")[0], line


def test_policy_all_exits_70_naming_the_app_that_went_fatal(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """app-1 fails at every start (supervisord's FATAL after HEYGEM_START_RETRIES); app-0 runs. Bug: the line
    says "app gave up after 2 quick failures", not which app. Should: name app-1."""
    port = _two_free_ports()
    env = _env(
        port,
        HEYGEM_APP_COMMAND=f"python {_switch_app(tmp_path)}",
        TEST_APP_MODE_GPU1="crash-loop",
        HEYGEM_START_RETRIES="1",
    )
    svc = launch_service(env=env)
    assert svc.wait(timeout=60) == 70
    line = next(x for x in svc.stderr().splitlines() if "HEYGEM_START_RETRIES=1" in x)
    assert "app-1" in line.split("HEYGEM_START_RETRIES")[0], line


def test_policy_any_probes_say_which_app_was_given_up(launch_service) -> None:  # type: ignore[no-untyped-def]
    """Under `any`, app-1 crash-loops past HEYGEM_MAX_RESTARTS and is stopped while app-0 runs on (correct:
    checked here). `status` says so. Bug: `probe ready|live|startup` then answer as if one app had ever been
    asked for ("ready: ok: both workers up, port P answers"): nothing says that app-1 was given up. Should: pass
    (one is enough under `any`) and name app-1 as given up."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, HEYGEM_MAX_RESTARTS="2", HEYGEM_GPU_POLICY="any"))
    first = _answer(svc, port)
    _kill_until_given_up(svc, port + 1, 3)
    programs = wait_for(lambda: (lambda p: p if p["app-1"]["given_up"] else None)(_programs(svc)), 20, "given up")
    assert programs["app-1"]["state"] == "STOPPED" and programs["app-0"]["state"] == "RUNNING"
    assert "HEYGEM_MAX_RESTARTS=2" in programs["app-1"]["given_up"]
    assert "given up" in control(svc, "status").stdout
    assert harness.get(port)["pid"] == first["pid"] and harness.get(port + 1) is None  # type: ignore[index]
    wait_for(lambda: _status(svc)["ready"], 30, "app-0 ready")
    for kind in ("ready", "live", "startup"):
        answer = control(svc, "probe", kind)
        said = answer.stdout + answer.stderr
        assert answer.returncode == 0, said
        assert "app-1" in said and "given up" in said, f"probe {kind}: {said}"


# -- stopping several apps ------------------------------------------------------------------------------------------
def test_sigterm_stops_both_apps_and_leaves_no_process(launch_service) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_env(port))
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    pids = [first["pid"], *first["workers"], second["pid"], *second["workers"]]
    assert set(pids) <= set(_in_app_dir(svc.app_dir))
    svc.signal(signal.SIGTERM)
    assert svc.wait(timeout=STOP_GRACE + 10) == 0
    assert all(harness.gone(pid) for pid in pids)
    assert _in_app_dir(svc.app_dir) == []
    assert "stopped (exit 0)" in svc.stderr()


def test_two_apps_that_ignore_sigterm_are_stopped_within_the_grace(launch_service) -> None:  # type: ignore[no-untyped-def]
    """Both apps ignore SIGTERM (HeyGem busy in a task). Bug: supervisord's shutdown stops its groups one after
    the other, each waiting its whole stopwaitsecs: N apps take N x HEYGEM_STOP_GRACE (measured: 6.1 s for two,
    8.1 s for three with grace 3, where the launcher's own wait of grace + 5 s runs out). With the default
    grace of 8 s, two apps take 16 s: past Docker's 10 s, so the container is SIGKILLed (137), not stopped
    with 0. Should: every app's group is SIGKILLed at HEYGEM_STOP_GRACE, as the README says (grace + 2 s, the
    bound the container test holds one app to)."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, TEST_APP_MODE="ignore-sigterm"))
    _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    svc.signal(signal.SIGTERM)
    began = time.monotonic()
    code = svc.wait(timeout=STOP_GRACE * 2 + 15)
    took = time.monotonic() - began
    assert code == 0
    assert _in_app_dir(svc.app_dir) == []
    assert took < STOP_GRACE + 2, f"two apps took {took:.1f} s to stop with HEYGEM_STOP_GRACE={STOP_GRACE}"


def test_sigkill_of_one_apps_wrapper_clears_its_group_and_leaves_the_other(launch_service) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_env(port))
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    wrapper = _programs(svc)["app-1"]["wrapper_pid"]
    os.kill(wrapper, signal.SIGKILL)
    again = _answer(svc, port + 1, not_pid=second["pid"])
    for pid in (second["pid"], *second["workers"]):
        wait_for(lambda pid=pid: harness.gone(pid), 10, f"old app-1 process {pid} gone")
    assert harness.get(port)["pid"] == first["pid"]  # type: ignore[index]
    assert all(not harness.gone(pid) for pid in first["workers"])
    assert environ_of(again["pid"])["CUDA_VISIBLE_DEVICES"] == "1"
    assert "killed what was left of the app-1 (GPU 1) process group" in svc.stderr()


# -- restart: the number of apps changes --------------------------------------------------------------------------
def test_restart_changes_the_number_of_apps_and_back_to_one(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """2 apps; a refused .env (bad HEYGEM_GPUS) keeps both; 2 -> 1 (app-1's processes gone); 1 -> none (the
    single app of old: program `app`, RUN_DIR/app.log); none -> 2."""
    port = _two_free_ports()
    env_file = tmp_path / "heygem.env"  # harness.control reads this file too
    env_file.write_text(f"HEYGEM_GPUS=2\nHEYGEM_APP_PORT={port}\nAPP_SETTING=a\n")
    svc = launch_service(env={"GRADIO_SERVER_PORT": None, "HEYGEM_ENV_FILE": str(env_file)})
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")

    env_file.write_text(f"HEYGEM_GPUS=1,x\nHEYGEM_APP_PORT={port}\n")
    refused = control(svc, "restart")
    assert refused.returncode == 78 and "HEYGEM_GPUS=" in refused.stderr, refused.stdout + refused.stderr
    assert harness.get(port)["pid"] == first["pid"] and harness.get(port + 1)["pid"] == second["pid"]  # type: ignore[index]

    env_file.write_text(f"HEYGEM_GPUS=1\nHEYGEM_APP_PORT={port}\nAPP_SETTING=b\n")
    assert control(svc, "restart").returncode == 0
    one = _answer(svc, port, not_pid=first["pid"])
    assert environ_of(one["pid"])["CUDA_VISIBLE_DEVICES"] == "0" and environ_of(one["pid"])["APP_SETTING"] == "b"
    for pid in (second["pid"], *second["workers"]):
        wait_for(lambda pid=pid: harness.gone(pid), 10, f"old app-1 process {pid} gone")
    assert harness.get(port + 1) is None
    assert set(_programs(svc)) == {"app-0"}

    env_file.write_text(f"HEYGEM_APP_PORT={port}\nAPP_SETTING=c\n")
    assert control(svc, "restart").returncode == 0
    single = _answer(svc, port, not_pid=one["pid"])
    assert "CUDA_VISIBLE_DEVICES" not in environ_of(single["pid"])
    assert set(_programs(svc)) == {"app"}
    assert "app started: pid" in svc.stderr()
    state = json.loads((svc.run_dir / "state.json").read_text())
    assert state["gpu_policy"] is None and [i["program"] for i in state["instances"]] == ["app"]
    log = svc.run_dir / "app.log"
    wait_for(lambda: f"http://0.0.0.0:{port}" in log.read_text(errors="replace"), 10, "the single app's output")
    ready = control(svc, "probe", "ready")
    assert ready.returncode == 0 and "apps pass" not in ready.stdout, ready.stdout

    env_file.write_text(f"HEYGEM_GPUS=2\nHEYGEM_APP_PORT={port}\nAPP_SETTING=d\n")
    assert control(svc, "restart").returncode == 0
    for i in (0, 1):
        info = _answer(svc, port + i, not_pid=single["pid"])
        assert environ_of(info["pid"])["CUDA_VISIBLE_DEVICES"] == str(i)
    assert set(_programs(svc)) == {"app-0", "app-1"}
    svc.signal(signal.SIGTERM)
    assert svc.wait(timeout=STOP_GRACE + 10) == 0
    assert _in_app_dir(svc.app_dir) == []


def test_restart_from_one_to_two_apps_rolls_back_when_the_new_second_app_dies(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    env_file = tmp_path / "heygem.env"
    env_file.write_text(f"HEYGEM_APP_PORT={port}\n")
    env = {
        "GRADIO_SERVER_PORT": None,
        "HEYGEM_ENV_FILE": str(env_file),
        "HEYGEM_APP_COMMAND": f"python {_switch_app(tmp_path)}",
        "HEYGEM_RESTART_TIMEOUT": "20",
    }
    svc = launch_service(env=env)
    old = _answer(svc, port)
    wait_for(lambda: _status(svc)["ready"], 30, "the app ready")
    env_file.write_text(f"HEYGEM_GPUS=2\nHEYGEM_APP_PORT={port}\nTEST_APP_MODE_GPU1=crash-loop\n")
    result = control(svc, "restart", "--json")
    assert result.returncode == 69, result.stdout + result.stderr
    assert json.loads(result.stdout)["rolled_back"] is True
    back = _answer(svc, port, not_pid=old["pid"])
    assert "CUDA_VISIBLE_DEVICES" not in environ_of(back["pid"])
    wait_for(lambda: set(_programs(svc)) == {"app"}, 15, "only the single app again")
    assert harness.get(port + 1) is None
    wait_for(lambda: control(svc, "probe", "ready").returncode == 0, 30, "the single app ready again")


# -- doctor over several apps ---------------------------------------------------------------------------------------
def test_doctor_counts_an_onnxruntime_fallback_line_of_the_second_app(launch_service) -> None:  # type: ignore[no-untyped-def]
    """ONNX Runtime's own fallback line in app-1's output. Bug: doctor reads only the first app's output
    (RUN_DIR/app-0.log), so the line the incident write-up tells people to look for is not counted for app-1
    (the same line in app-0's output is). Should: counted whichever app logged it."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port))
    _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    assert harness.get(port + 1, "/emit/fallback") == {"emitted": "fallback"}
    wait_for(lambda: "Failed to" in (svc.run_dir / "app-1.log").read_text(errors="replace"), 10, "app-1's line")
    doctor = control(svc, "doctor", "--json")
    counts = json.loads(doctor.stdout)["log"]["counts"]
    assert counts.get("onnxruntime_fallback", 0) >= 1, counts


def test_doctor_with_the_first_app_given_up_describes_the_running_one(launch_service) -> None:  # type: ignore[no-untyped-def]
    """Under `any`, app-0 is given up (killed past HEYGEM_MAX_RESTARTS=0) while app-1 runs. Bug: doctor takes
    the first program as "the app" (STOPPED, no pid), then goes looking for an app started by hand in the app
    dir and takes app-1's wrapper for it: it shows that shell's environment (no CUDA_VISIBLE_DEVICES, no
    LD_LIBRARY_PATH) as "the running app's", and says "app STOPPED pid <app-1's wrapper>". Should: describe
    the app that runs (app-1), started by heygem-launch."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, HEYGEM_MAX_RESTARTS="0", HEYGEM_GPU_POLICY="any"))
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: _programs(svc)["app-0"]["given_up"], 20, "app-0 given up")
    data = json.loads(control(svc, "doctor", "--json").stdout)
    assert "app_started_by_hand" not in data["service"], data["service"]
    shown = data["app"]
    assert shown.get("pid") == second["pid"], shown
    assert shown.get("environment", {}).get("CUDA_VISIBLE_DEVICES") == "1", shown


# -- status and the preflight's words over several apps -----------------------------------------------------------
def test_status_shows_a_task_that_ran_on_the_second_app(launch_service) -> None:  # type: ignore[no-untyped-def]
    """A task done on app-1. `status --json` lists it under app-1's program (correct). Bug: `status` (people's
    text) and the top level of `status --json` show only the first app's tasks (the state file's top level is
    app-0's), so the task that ran on GPU 1 is not among "the last tasks" at all. Should: shown, with its app."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port))
    _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    assert harness.get(port + 1, "/task?code=77&kind=ok&frames=8") is not None
    ended = lambda: [t for t in _programs(svc)["app-1"]["tasks"] if t["outcome"] == "done"]  # noqa: E731
    wait_for(ended, 20, "app-1's task ended")
    assert [t["code"] for t in _programs(svc)["app-1"]["tasks"]] == ["77"]
    text = control(svc, "status").stdout
    assert "task 77 on app-1: done" in text, text
    assert "77" in [t["code"] for t in _status(svc)["tasks"]]


def test_preflight_skip_with_two_apps_does_not_say_the_gpus_passed(launch_service) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_PREFLIGHT=skip with HEYGEM_GPUS=2 (CUDA required, which cannot pass here). The one app of old
    says "OK?: preflight skipped ... nothing was checked". Bug: with two apps the table says each GPU
    "passed" and the verdict "OK: 2 of 2 GPUs passed": a claim that nothing checked. Should: skipped, per GPU."""
    port = _two_free_ports()
    env = _env(port, HEYGEM_PREFLIGHT="skip", HEYGEM_REQUIRE_PROVIDER="CUDAExecutionProvider")
    svc = launch_service(env={**env, "HEYGEM_ON_CPU_FALLBACK": "warn"})
    _answer(svc, port), _answer(svc, port + 1)
    said = svc.stdout() + svc.stderr()
    assert "HEYGEM_PREFLIGHT=skip" in said
    assert "GPUs passed" not in said and f"port {port + 1}: passed" not in said, said[-1200:]


def test_policy_all_exits_70_naming_the_app_whose_incidents_used_up_its_budget(launch_service) -> None:  # type: ignore[no-untyped-def]
    """The third give-up line (RestartBudget.exceeded): app-1's queue-full line with HEYGEM_MAX_RESTARTS=0.
    Bug: "1 restarts in 300 s (HEYGEM_MAX_RESTARTS=0): giving up; last: incident blocked", no app named."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, HEYGEM_MAX_RESTARTS="0"))
    _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    harness.get(port + 1, "/emit/queue-full")
    assert svc.wait(timeout=30) == 70
    line = next(x for x in svc.stderr().splitlines() if "HEYGEM_MAX_RESTARTS=0" in x)
    assert "app-1" in line.split("HEYGEM_MAX_RESTARTS")[0], line


# -- SIGTERM while the GPUs' probes run ---------------------------------------------------------------------------
@pytest.mark.parametrize("gpus", ["1", "2"])
def test_sigterm_during_the_per_gpu_preflight_kills_every_probe(tmp_path: Path, gpus: str) -> None:
    """The probes (one per GPU, in parallel threads) hang at their python's start (a .pth line sleeps, as a
    stuck CUDA init would). SIGTERM to the launcher must do what it does for the one app of old (0.1 s here):
    143, one line, no probe left, no app started. Bug: with any HEYGEM_GPUS the launcher does not exit: the
    signal's exception unwinds the main thread into ThreadPoolExecutor's exit, which waits for the worker
    threads, each waiting on its probe until HEYGEM_PREFLIGHT_TIMEOUT (90 s by default); the probes, in their own
    sessions out of reach of tini's group signal, are not killed. `docker stop` then ends in SIGKILL (137)."""
    from tests import envs

    prefix = envs.make_venv(tmp_path / "hang")
    (envs.site_of(prefix) / "zz_hang.pth").write_text("import time; time.sleep(600)\n")
    port = _two_free_ports()
    env = {**_env(port), "HEYGEM_GPUS": gpus, "HEYGEM_PREFLIGHT_TIMEOUT": "300"}
    svc = harness.start(tmp_path, prefix, env=env)  # type: ignore[arg-type]
    try:
        probes = wait_for(
            lambda: (lambda p: p if len(p) == int(gpus) else None)(harness.probes_of(prefix)), 30, "every probe started"
        )
        time.sleep(0.3)
        os.kill(svc.proc.pid, signal.SIGTERM)
        try:
            code = svc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            left = [pid for pid in probes if not harness.gone(pid)]
            pytest.fail(f"no exit 20 s after SIGTERM; probes still running: {left}")
        assert code == 143
        err = svc.stderr()
        assert "SIGTERM during the preflight" in err and "Traceback" not in err, err[-2000:]
        for pid in probes:
            wait_for(lambda pid=pid: harness.gone(pid), 5, f"probe {pid} gone")
        assert harness.get(port) is None and harness.get(port + 1) is None
    finally:
        svc.cleanup()
        for pid in harness.probes_of(prefix):
            os.kill(pid, signal.SIGKILL)


def test_a_restart_whose_preflight_refuses_one_gpu_keeps_both_old_apps(tmp_path: Path) -> None:
    """Two apps run; then GPU 1's preflight starts failing for real (an activate.d script of the env, run with
    the app's CUDA_VISIBLE_DEVICES, sets a PYTHONHOME under which its python cannot start). `restart` under
    `all`: 69 naming GPU 1, and both old apps keep answering, untouched."""
    from tests import envs

    prefix = envs.make_venv(tmp_path / "env")
    envs.link_ort(prefix)
    port = _two_free_ports()
    (tmp_path / "heygem.env").write_text("")  # what harness.control's restart reads
    svc = harness.start(tmp_path, prefix, env={**_env(port), "TEST_APP_SPEED": "20"})  # type: ignore[arg-type]
    try:
        first, second = _answer(svc, port), _answer(svc, port + 1)
        wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
        (prefix / "conda-meta").mkdir(exist_ok=True)
        folder = prefix / "etc" / "conda" / "activate.d"
        folder.mkdir(parents=True)
        (folder / "broken-on-gpu1.sh").write_text(
            'if [ "$CUDA_VISIBLE_DEVICES" = 1 ]; then export PYTHONHOME=/nonexistent; fi\n'
        )
        result = control(svc, "restart")
        assert result.returncode == 69, result.stdout + result.stderr
        assert "GPU 1" in result.stdout + result.stderr
        assert harness.get(port)["pid"] == first["pid"] and harness.get(port + 1)["pid"] == second["pid"]  # type: ignore[index]
        programs = _programs(svc)
        assert programs["app-0"]["restarts"] == 0 and programs["app-1"]["restarts"] == 0
        assert control(svc, "probe", "ready").returncode == 0
        svc.signal(signal.SIGTERM)
        assert svc.wait(timeout=STOP_GRACE + 10) == 0
    finally:
        svc.cleanup()


def test_doctor_calls_an_app_given_up_a_problem(launch_service) -> None:  # type: ignore[no-untyped-def]
    """Under `any`, app-1 crash-looped past its HEYGEM_MAX_RESTARTS and was stopped; app-0 serves alone, on half
    the GPUs. Bug: `doctor` exits 0, "no problem found". Should: 69 (the README's "a problem"), naming app-1."""
    port = _two_free_ports()
    svc = launch_service(env=_env(port, HEYGEM_MAX_RESTARTS="0", HEYGEM_GPU_POLICY="any"))
    _answer(svc, port)
    second = _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    os.kill(second["pid"], signal.SIGKILL)
    wait_for(lambda: _programs(svc)["app-1"]["given_up"], 20, "app-1 given up")
    doctor = control(svc, "doctor", "--json")
    data = json.loads(doctor.stdout)
    assert doctor.returncode == 69 and data["problem"] is True, data["conclusion"]
    assert "app-1" in data["conclusion"], data["conclusion"]


def test_supervisord_killed_ends_both_apps_with_70(launch_service) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_env(port))
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    os.kill(int((svc.run_dir / "supervisord.pid").read_text()), signal.SIGKILL)
    assert svc.wait(timeout=STOP_GRACE + 10) == 70
    assert "supervisord exited unexpectedly" in svc.stderr()
    for pid in (first["pid"], *first["workers"], second["pid"], *second["workers"]):
        wait_for(lambda pid=pid: harness.gone(pid), 5, f"app process {pid} gone")
    assert _in_app_dir(svc.app_dir) == []


def test_restart_stops_the_old_apps_together_not_one_after_the_other(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Both apps ignore SIGTERM; `restart` replaces them. Bug: install() stops the old programs one by one
    (stopProcessGroup with wait=True each), so app-1 is only signalled once app-0 was SIGKILLed at the grace:
    the service is down N x HEYGEM_STOP_GRACE, and the launcher's loop is blocked all that time. Should: the old
    apps end together, at the grace (here app-1 ends ~3 s after app-0)."""
    port = _two_free_ports()
    env_file = tmp_path / "heygem.env"
    env_file.write_text("APP_SETTING=a\n")
    svc = launch_service(env=_env(port, HEYGEM_ENV_FILE=str(env_file), TEST_APP_MODE="ignore-sigterm"))
    first, second = _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    env_file.write_text("APP_SETTING=b\n")
    ended: dict[int, float] = {}
    restart = subprocess.Popen(
        [*LAUNCH, "restart"],
        env=clean_environ(HEYGEM_RUN_DIR=str(svc.run_dir), HEYGEM_ENV_FILE=str(env_file)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STOP_GRACE * 2 + 20
        while len(ended) < 2 and time.monotonic() < deadline:
            for pid in (first["pid"], second["pid"]):
                if pid not in ended and harness.gone(pid):
                    ended[pid] = time.monotonic()
            time.sleep(0.02)
        assert len(ended) == 2, "the old apps were not both replaced"
        assert restart.wait(timeout=60) == 0
    finally:
        restart.kill()
    apart = abs(ended[first["pid"]] - ended[second["pid"]])
    assert apart < 1.5, f"the old apps ended {apart:.1f} s apart (HEYGEM_STOP_GRACE={STOP_GRACE})"


def test_probe_live_passes_while_a_restart_replaces_the_apps(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`probe live` (Kubernetes' liveness: failures restart the pod) asked over and over while `restart`
    replaces two apps that take the whole grace to stop. Bug: it fails ("app-0: the app is STOPPED") for as long
    as the other old app is still being stopped (one grace per app, see the test above), and again between a
    program's removal and its return, where the probe does not even answer: supervisord's BAD_NAME Fault escapes
    it as "heygem-launch: internal error: Fault: <Fault 10: 'BAD_NAME: app-0'>" (exit 70, where a probe must
    exit 0 or 1). The launcher is replacing the apps on purpose: STOPPING is already taken as alive; so must the
    rest of a deliberate replacement be."""
    port = _two_free_ports()
    env_file = tmp_path / "heygem.env"
    env_file.write_text("APP_SETTING=a\n")
    svc = launch_service(env=_env(port, HEYGEM_ENV_FILE=str(env_file), TEST_APP_MODE="ignore-sigterm"))
    _answer(svc, port), _answer(svc, port + 1)
    wait_for(lambda: _status(svc)["ready"], 30, "both apps ready")
    env_file.write_text("APP_SETTING=b\n")
    restart = subprocess.Popen(
        [*LAUNCH, "restart"],
        env=clean_environ(HEYGEM_RUN_DIR=str(svc.run_dir), HEYGEM_ENV_FILE=str(env_file)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    failures = []
    try:
        while restart.poll() is None:
            live = control(svc, "probe", "live")
            if live.returncode != 0:
                failures.append((live.returncode, (live.stdout + live.stderr).strip()))
        assert restart.returncode == 0
    finally:
        restart.kill()
    assert {code for code, _ in failures} <= {1}, f"a probe that is no answer: {failures[:3]}"
    assert failures == [], f"{len(failures)} failed: {failures[:3]}"
