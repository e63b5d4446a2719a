"""An app per GPU (HEYGEM_GPUS, HEYGEM_GPU_POLICY).

This machine has no GPU. What can be real here is: the planning from NVML figures (an `Inventory` built from
the figures a two-GPU machine reports: the one stand-in, for a driver this machine lacks), the per-GPU
preflight with real probe children each pinned by CUDA_VISIBLE_DEVICES, real verdicts (CUDA refuses here for
real, the CPU provider passes for real), and two real apps under one real supervisord with
HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider, killed and blocked for real. The GPU path itself is in
test_gpu.py (`gpu` marker)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.config.instances import GpuSelection, Instance, parse_gpus, plan
from launcher.config.settings import load_settings
from launcher.errors import ConfigError
from launcher.preflight.check import run_preflight
from launcher.preflight.fleet import FleetCheck, MemberCheck, fleet_preflight
from launcher.preflight.report import render_fleet
from launcher.system import gpu
from tests import envs, harness
from tests.conftest import LAUNCH, assert_refused_at_once, clean_environ
from tests.harness import control, environ_of, wait_for

UUID0, UUID1 = "GPU-0b1c6b5e-5a3f-11ee-8c99-0242ac120002", "GPU-8f2d7c1a-5a3f-11ee-8c99-0242ac120002"
# What NVML reports on a two-GPU machine (two H200s), as `launcher.system.gpu.inventory()` would build it.
TWO_GPUS = gpu.Inventory(
    True,
    "",
    "570.86.15",
    "12.8",
    (
        gpu.Gpu(0, "NVIDIA H200", UUID0, 143771, 512, 0, 0),
        gpu.Gpu(1, "NVIDIA H200", UUID1, 143771, 512, 0, 0),
    ),
)
NO_DRIVER = gpu.Inventory(False, "no NVIDIA driver: libnvidia-ml.so.1 not found")


# -- HEYGEM_GPUS --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("all", GpuSelection("all")),
        ("ALL", GpuSelection("all")),
        ("2", GpuSelection("count", 2)),
        ("0,1", GpuSelection("list", 2, ("0", "1"))),
        (UUID1, GpuSelection("list", 1, (UUID1,))),
    ],
)
def test_gpus_setting_parses(raw: str, expected: GpuSelection | None) -> None:
    assert parse_gpus(raw) == expected


@pytest.mark.parametrize("raw", ["0", "65", "x", "1,1", "0,,1", "-1", "gpu0"])
def test_bad_gpus_setting_is_one_line_naming_the_key(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^HEYGEM_GPUS="):
        load_settings({"HEYGEM_GPUS": raw}, environ={})


def test_bad_gpu_policy_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^HEYGEM_GPU_POLICY='some'.*all, any"):
        load_settings({"HEYGEM_GPU_POLICY": "some"}, environ={})


# -- planning from NVML figures -----------------------------------------------------------------------
def test_default_is_the_single_unpinned_app() -> None:
    assert plan(None, None, TWO_GPUS, 7860) == (Instance(0, "app", None, None, 7860),)


def test_all_is_one_app_per_gpu_with_its_own_port_and_device() -> None:
    apps = plan(GpuSelection("all"), None, TWO_GPUS, 7860)
    assert [(a.program, a.cuda_visible_devices, a.port) for a in apps] == [("app-0", "0", 7860), ("app-1", "1", 7861)]
    assert apps[1].device == TWO_GPUS.gpus[1]
    assert apps[1].gpu_label == f"GPU 1 ({UUID1})"


def test_a_list_by_uuid_finds_the_gpu_and_keeps_the_uuid_for_cuda() -> None:
    (app,) = plan(GpuSelection("list", 1, (UUID1[:12],)), None, TWO_GPUS, 9000)
    assert app.cuda_visible_devices == UUID1[:12] and app.device == TWO_GPUS.gpus[1] and app.port == 9000


def test_the_launchers_own_cuda_visible_devices_bounds_the_selection() -> None:
    apps = plan(GpuSelection("all"), "1", TWO_GPUS, 7860)
    assert [(a.cuda_visible_devices, a.device) for a in apps] == [("1", TWO_GPUS.gpus[1])]
    with pytest.raises(ConfigError, match=r"HEYGEM_GPUS: '0' is not among CUDA_VISIBLE_DEVICES='1'"):
        plan(GpuSelection("list", 1, ("0",)), "1", TWO_GPUS, 7860)


@pytest.mark.parametrize(
    ("selection", "inventory", "message"),
    [
        (GpuSelection("count", 3), TWO_GPUS, r"HEYGEM_GPUS=3: only 2 GPU\(s\) visible \(NVML\)"),
        (GpuSelection("all"), NO_DRIVER, r"HEYGEM_GPUS=all: no GPU to count \(no NVIDIA driver"),
        (GpuSelection("list", 1, ("7",)), TWO_GPUS, r"HEYGEM_GPUS: '7' matches no GPU \(NVML lists: 0 \(GPU-"),
        (GpuSelection("list", 2, ("1", UUID1)), TWO_GPUS, r"names the same GPU twice"),
    ],
)
def test_gpus_that_are_not_there_are_refused_naming_the_key(
    selection: GpuSelection, inventory: gpu.Inventory, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(selection, None, inventory, 7860)


def test_ports_past_65535_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ports 65535-65536 go past 65535"):
        plan(GpuSelection("count", 2), None, TWO_GPUS, 65535)


def test_a_count_without_a_driver_is_planned_and_left_to_the_preflight() -> None:
    apps = plan(GpuSelection("count", 2), None, NO_DRIVER, 7860)
    assert [(a.cuda_visible_devices, a.device) for a in apps] == [("0", None), ("1", None)]


# -- the per-GPU preflight -------------------------------------------------------------------------------
def _settings(ort_env: Path, tmp_path: Path, **extra: str):  # type: ignore[no-untyped-def]
    (tmp_path / "app.py").write_text("print('app')\n")
    flags = {
        "HEYGEM_CONDA_ENV": str(ort_env),
        "HEYGEM_APP_DIR": str(tmp_path),
        "HEYGEM_RUN_DIR": str(tmp_path / "run"),
        "HEYGEM_APP_PORT": "7860",
        **extra,
    }
    return load_settings(flags, environ={})


def test_each_probe_runs_pinned_to_its_gpu(ort_env: Path, tmp_path: Path) -> None:
    """Real probe children, one per GPU, each with its app's exact environment (the NVML figures are the
    stand-in: this machine has no driver)."""
    settings = _settings(ort_env, tmp_path, HEYGEM_GPUS="all", HEYGEM_REQUIRE_PROVIDER="CPUExecutionProvider")
    fleet = fleet_preflight(settings, clean_environ(), start=False, inventory=lambda: TWO_GPUS)
    assert fleet.ok and len(fleet.running) == 2
    for member, (visible, port) in zip(fleet.members, (("0", 7860), ("1", 7861)), strict=True):
        assert member.check.probe.report["cuda_visible_devices"] == visible  # what the probe child saw
        assert member.check.app.env["CUDA_VISIBLE_DEVICES"] == visible  # what the app will get
        assert member.check.app.port == port and member.check.app.env["GRADIO_SERVER_PORT"] == str(port)
    listed = json.loads(json.dumps(fleet.as_dict()))["instances"][1]
    assert (listed["gpu_uuid"], listed["probe_cuda_visible_devices"]) == (UUID1, "1")


def _one_gpu_fails(ort_env: Path, tmp_path: Path, policy: str) -> FleetCheck:
    """GPU 0's preflight passes and GPU 1's refuses, both for real on this machine: CPU provider required
    for GPU 0, CUDA (which cannot pass without a driver and CUDA libraries) for GPU 1."""
    base = _settings(ort_env, tmp_path, HEYGEM_GPUS="all", HEYGEM_GPU_POLICY=policy)
    apps = plan(base.gpus, None, TWO_GPUS, 7860)
    passes = run_preflight(replace(base, require_provider="CPUExecutionProvider"), {"CUDA_VISIBLE_DEVICES": "0"})
    refuses = run_preflight(replace(base, app_port=7861), {"CUDA_VISIBLE_DEVICES": "1"})
    assert passes.ok and not refuses.ok
    return FleetCheck(base, (MemberCheck(apps[0], passes), MemberCheck(apps[1], refuses)))


def test_policy_all_refuses_naming_the_gpu_that_failed(ort_env: Path, tmp_path: Path) -> None:
    fleet = _one_gpu_fails(ort_env, tmp_path, "all")
    assert not fleet.ok and fleet.running == ()
    verdict = fleet.verdict
    assert verdict.cause == fleet.members[1].check.verdict.cause
    assert verdict.message.startswith(f"GPU 1 ({UUID1}): ") and "HEYGEM_GPU_POLICY=all" in verdict.message
    text = render_fleet(fleet)
    assert f"app-1   GPU 1 ({UUID1})" in text and "REFUSED [" in text.splitlines()[-2]


def test_policy_any_starts_the_gpus_that_passed_and_reports_the_others(ort_env: Path, tmp_path: Path) -> None:
    fleet = _one_gpu_fails(ort_env, tmp_path, "any")
    assert fleet.ok and [m.instance.program for m in fleet.running] == ["app-0"]
    assert fleet.verdict.message.startswith("1 of 2 GPUs passed (HEYGEM_GPU_POLICY=any); starting only those")
    assert any(note.startswith(f"GPU 1 ({UUID1}) refused [") for note in fleet.verdict.notes)
    data = fleet.as_dict()
    assert [i["ok"] for i in data["instances"]] == [True, False] and data["gpu_policy"] == "any"


def test_skipped_two_gpus_say_skipped_in_the_json_not_ok(ort_env: Path, tmp_path: Path) -> None:
    """HEYGEM_PREFLIGHT=skip with HEYGEM_GPUS=2: the documents the service keeps (restart --json's `check`)."""
    skip = {"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider"}
    settings = _settings(ort_env, tmp_path, HEYGEM_GPUS="2", **skip)
    data = fleet_preflight(settings, {}, inventory=lambda: NO_DRIVER).as_dict()
    assert (data["result"], data["ok"]) == ("skipped", None)
    assert [(i["result"], i["ok"]) for i in data["instances"]] == [("skipped", None)] * 2


def test_check_only_with_two_gpus_without_a_driver_refuses_for_each(tmp_path: Path) -> None:
    """`heygem-launch --check-only` on this machine with HEYGEM_GPUS=2: both GPUs refused, each named."""
    import subprocess

    (tmp_path / "app.py").write_text("print('app')\n")
    env = clean_environ(HEYGEM_GPUS="2", HEYGEM_APP_DIR=str(tmp_path), HEYGEM_RUN_DIR=str(tmp_path / "run"))
    result = subprocess.run([*LAUNCH, "--check-only", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 69, result.stderr
    data = json.loads(result.stdout)
    assert [(i["program"], i["cuda_visible_devices"], i["ok"]) for i in data["instances"]] == [
        ("app-0", "0", False),
        ("app-1", "1", False),
    ]


# -- two real apps under one supervisord ---------------------------------------------------------------
def _two_free_ports() -> int:
    return harness.free_ports(2)


def _two_apps_env(port: int, **extra: str) -> dict[str, str | None]:
    return {"HEYGEM_GPUS": "2", "HEYGEM_APP_PORT": str(port), "GRADIO_SERVER_PORT": None, **extra}


@pytest.fixture
def two_apps(launch_service) -> harness.Service:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_two_apps_env(port))
    svc.port = port
    return svc


def _status(svc: harness.Service) -> dict:  # type: ignore[type-arg]
    return json.loads(control(svc, "status", "--json").stdout)


def _pids(svc: harness.Service, port: int, not_pid: int | None = None) -> dict:  # type: ignore[type-arg]
    def answered() -> dict | None:  # type: ignore[type-arg]
        svc.assert_alive()
        info = harness.get(port)
        return info if info and info.get("pid") != not_pid else None

    return wait_for(answered, 30, f"the app on port {port}")


def test_two_apps_each_on_its_gpu_and_port(two_apps: harness.Service) -> None:
    """On this CPU machine with HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider and HEYGEM_GPUS=2."""
    first, second = _pids(two_apps, two_apps.port), _pids(two_apps, two_apps.port + 1)
    assert first["pid"] != second["pid"]
    assert environ_of(first["pid"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert environ_of(second["pid"])["CUDA_VISIBLE_DEVICES"] == "1"
    assert environ_of(second["pid"])["GRADIO_SERVER_PORT"] == str(two_apps.port + 1)
    wait_for(lambda: _status(two_apps)["ok"] and _status(two_apps)["ready"], 30, "both apps ready")
    programs = {p["name"]: p for p in _status(two_apps)["programs"]}
    assert set(programs) == {"app-0", "app-1"}
    assert (programs["app-0"]["pid"], programs["app-1"]["pid"]) == (first["pid"], second["pid"])
    assert (programs["app-1"]["port"], programs["app-1"]["cuda_visible_devices"]) == (two_apps.port + 1, "1")
    ready = control(two_apps, "probe", "ready")
    assert ready.returncode == 0 and "2 of 2 apps pass" in ready.stdout + ready.stderr


def test_killing_one_app_restarts_only_it(two_apps: harness.Service) -> None:
    first, second = _pids(two_apps, two_apps.port), _pids(two_apps, two_apps.port + 1)
    os.kill(second["pid"], signal.SIGKILL)
    again = _pids(two_apps, two_apps.port + 1, not_pid=second["pid"])
    assert again["pid"] != second["pid"]
    assert harness.get(two_apps.port)["pid"] == first["pid"]  # type: ignore[index]
    programs = {p["name"]: p for p in wait_for(lambda: _restarted(two_apps, "app-1"), 15, "the restart counted")}
    assert programs["app-0"]["restarts"] == 0 and programs["app-1"]["restarts"] == 1


def _restarted(svc: harness.Service, name: str) -> list | None:  # type: ignore[type-arg]
    programs = _status(svc)["programs"]
    return programs if any(p["name"] == name and p["restarts"] == 1 for p in programs) else None


def test_a_queue_full_line_in_one_app_restarts_only_that_one(two_apps: harness.Service) -> None:
    first, second = _pids(two_apps, two_apps.port), _pids(two_apps, two_apps.port + 1)
    wait_for(lambda: _status(two_apps)["ready"], 30, "both apps ready")
    harness.get(two_apps.port, "/emit/queue-full")
    again = _pids(two_apps, two_apps.port, not_pid=first["pid"])
    assert again["pid"] != first["pid"]
    assert harness.get(two_apps.port + 1)["pid"] == second["pid"]  # type: ignore[index]
    snapshots = list(two_apps.run_dir.glob("incident-*-app-0-blocked.json"))
    assert len(snapshots) == 1 and not list(two_apps.run_dir.glob("incident-*-app-1-*.json"))
    assert "app-0: " in two_apps.stderr() and "[app-0] " in two_apps.stdout()


def test_restart_after_a_config_change_replaces_every_app(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    env_file = tmp_path / "heygem.env"
    env_file.write_text("APP_SETTING=old\n")
    svc = launch_service(env=_two_apps_env(port, HEYGEM_ENV_FILE=str(env_file)))
    old = [_pids(svc, port)["pid"], _pids(svc, port + 1)["pid"]]
    env_file.write_text("APP_SETTING=new\n")
    result = control(svc, "restart")
    assert result.returncode == 0, result.stdout + result.stderr
    for i, pid in enumerate(old):
        new = _pids(svc, port + i, not_pid=pid)
        assert environ_of(new["pid"])["APP_SETTING"] == "new"
        assert environ_of(new["pid"])["CUDA_VISIBLE_DEVICES"] == str(i)
    assert {p["name"] for p in _status(svc)["programs"]} == {"app-0", "app-1"}


def conda_env_with(tmp_path: Path, activate_sh: str) -> Path:
    """A private conda env (onnxruntime-gpu linked in) whose activate.d script does `activate_sh`: the
    session's shared `ort_env` must never be changed by a test."""
    prefix = envs.make_venv(tmp_path / "conda-env")
    envs.link_ort(prefix)
    envs.make_conda(prefix, {}, activate_sh)
    return prefix


def _on_gpu_1(tmp_path: Path, export: str) -> dict[str, str]:
    """The settings for apps whose conda env's activate.d script (run, as `conda activate` runs it, with the
    app's CUDA_VISIBLE_DEVICES) exports `export` for GPU 1 alone: a real failure of that GPU's app only."""
    script = f'if [ "$CUDA_VISIBLE_DEVICES" = 1 ]; then export {export}; fi\n'
    return {"HEYGEM_CONDA_ENV": str(conda_env_with(tmp_path, script))}


def _break_gpu_1(tmp_path: Path) -> dict[str, str]:
    """GPU 1's preflight fails for real: a PYTHONHOME under which its probe's python cannot start. The
    stand-in for a GPU that fails; the other GPU's probe passes."""
    return _on_gpu_1(tmp_path, "PYTHONHOME=/nonexistent")


def test_policy_all_refuses_to_start_naming_the_gpu(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = _break_gpu_1(tmp_path)
    port = _two_free_ports()
    svc = launch_service(env=_two_apps_env(port, **broken))
    assert svc.wait(timeout=120) == 69
    err = svc.stderr()
    assert "REFUSED [" in err and "GPU 1: " in err and "HEYGEM_GPU_POLICY=all needs every GPU to pass" in err
    assert harness.get(port) is None and harness.get(port + 1) is None  # nothing was started


def test_policy_any_starts_the_gpu_that_passed(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_two_apps_env(port, HEYGEM_GPU_POLICY="any", **_break_gpu_1(tmp_path)))
    first = _pids(svc, port)
    assert environ_of(first["pid"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert "1 of 2 GPUs passed (HEYGEM_GPU_POLICY=any); starting only those" in svc.stderr()
    wait_for(lambda: _status(svc)["ready"], 30, "the app on GPU 0 ready")
    programs = {p["name"]: p for p in _status(svc)["programs"]}
    assert programs["app-0"]["state"] == "RUNNING"
    assert programs["app-1"]["state"] == "NOT STARTED" and "preflight refused" in programs["app-1"]["given_up"]
    assert harness.get(port + 1) is None
    ready = control(svc, "probe", "ready")
    assert ready.returncode == 0, ready.stdout + ready.stderr


def _crash_loop_on_gpu_1(tmp_path: Path) -> dict[str, str]:
    """The app on GPU 1 crash-loops for real (the stand-in's crash-loop mode); the app on GPU 0 is healthy."""
    return _on_gpu_1(tmp_path, "TEST_APP_MODE=crash-loop")


def test_an_app_that_cannot_run_stops_the_launcher_under_all(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    crashing = _crash_loop_on_gpu_1(tmp_path)
    port = _two_free_ports()
    svc = launch_service(env=_two_apps_env(port, **crashing))
    assert svc.wait(timeout=120) == 70
    err = svc.stderr()
    assert "app-1 (GPU 1): app gave up after 4 quick failures" in err and "stopped (exit 70)" in err


def test_under_any_only_the_app_that_cannot_run_is_stopped(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _two_free_ports()
    svc = launch_service(env=_two_apps_env(port, HEYGEM_GPU_POLICY="any", **_crash_loop_on_gpu_1(tmp_path)))
    first = _pids(svc, port)
    wait_for(lambda: "stopping app-1 only, 1 app(s) run on" in svc.stderr(), 120, "app-1 given up")
    programs = {p["name"]: p for p in _status(svc)["programs"]}
    assert programs["app-1"]["given_up"] and programs["app-0"]["state"] == "RUNNING"
    assert harness.get(port)["pid"] == first["pid"]  # type: ignore[index]
    wait_for(lambda: _status(svc)["ok"], 30, "status ok with app-0 alone")
    ready = control(svc, "probe", "ready")
    assert ready.returncode == 0, ready.stdout + ready.stderr


def test_a_busy_port_of_the_second_app_is_refused_before_the_preflight(launch, ort_env: Path) -> None:
    """HEYGEM_GPUS=2: the apps take HEYGEM_APP_PORT and HEYGEM_APP_PORT + 1, and a real listener on the second
    is refused at once, before two probes run and their report is printed."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        env = {
            "HEYGEM_CONDA_ENV": str(ort_env),
            "HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider",
            "HEYGEM_GPUS": "2",
            "HEYGEM_APP_PORT": str(busy - 1),
        }
        began = time.monotonic()
        run = launch(env=env, timeout=60)
        elapsed = time.monotonic() - began
    assert_refused_at_once(run.returncode, run.stderr, elapsed, f"port {busy}")


def test_two_apps_with_the_preflight_skipped_read_skipped_everywhere(launch_service) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_PREFLIGHT=skip, CUDA required (it cannot pass here), HEYGEM_GPUS=2. Bug: `probe startup` said
    "preflight passed" for each app, `status` "passed", and each app's `heygem_preflight_ok` was 1."""
    from tests.watch.test_metrics import scrape

    port, metrics = _two_free_ports(), harness.free_port()
    skip = {"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider", "HEYGEM_GPU_GRACE": "600"}
    svc = launch_service(env=_two_apps_env(port, **skip, HEYGEM_METRICS_PORT=str(metrics)))
    _pids(svc, port), _pids(svc, port + 1)
    startup = wait_for(lambda: (run := control(svc, "probe", "startup")).returncode == 0 and run, 30, "probe startup")
    assert startup.stdout.count("preflight skipped (HEYGEM_PREFLIGHT=skip)") == 2 and "passed" not in startup.stdout
    text = control(svc, "status").stdout
    assert "last preflight: skipped (HEYGEM_PREFLIGHT=skip)" in text and "passed" not in text, text
    assert (_status(svc)["preflight"]["result"], _status(svc)["preflight"]["ok"]) == ("skipped", None)
    got = scrape(metrics)
    assert [got[("heygem_preflight_skipped", (("app", app),))] for app in ("app-0", "app-1")] == [1, 1]
    assert not [key for key in got if key[0] == "heygem_preflight_ok"]
