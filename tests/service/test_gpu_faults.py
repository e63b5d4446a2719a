"""GPU faults while the app runs: the real service (real supervisord, the HeyGem-like app as real processes) on a
STAND-IN NVIDIA DRIVER (tests/standin_driver.py: a libnvidia-ml.so.1 built with cc, because no CPU machine has a GPU
that faults). The stand-in delivers the XIDs and NVML errors the test raises through NVML's event API, as
nvidia-ml-py calls it; it stands in for the driver and the GPU only."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from launcher import exitcodes
from tests import harness, standin_driver, stubelf
from tests.harness import wait_for
from tests.standin_driver import StandInDriver, StandInGpu

pytestmark = pytest.mark.skipif(stubelf.cc() is None, reason="no C compiler to build the stand-in driver")

UUID0 = "GPU-00000000-0000-0000-0000-000000000000"
UUID1 = "GPU-00000000-0000-0000-0000-000000000001"


def _driver(tmp_path: Path, gpus: int = 1) -> Path:
    return standin_driver.install(tmp_path / "driver", StandInDriver(gpus=tuple(StandInGpu() for _ in range(gpus))))


def _watching(svc: harness.Service) -> None:
    wait_for(lambda: "started: pid" in svc.stderr(), 60, "the app started")
    assert "GPU watch off" not in svc.stderr()


def _starts(svc: harness.Service, program: str = "app ") -> int:
    return sum(1 for line in svc.stderr().splitlines() if f"{program}started: pid" in line)


@pytest.mark.parametrize(
    ("xid", "name"),
    [
        (13, "Graphics Engine Exception"),
        # Once outside the table, and so read as a GPU reset (exit 71); the catalogue says restart the app.
        (32, "Invalid or corrupted push buffer stream"),
    ],
)
def test_an_application_xid_restarts_the_app_at_once(launch_service, tmp_path: Path, xid, name) -> None:  # type: ignore[no-untyped-def]
    driver = _driver(tmp_path)
    svc = launch_service(env=standin_driver.launcher_env(driver))
    first = svc.wait_app()
    _watching(svc)
    standin_driver.raise_xid(driver, 0, xid)
    again = svc.wait_app(timeout=15, not_pid=first["pid"])
    svc.assert_alive()  # the same launcher
    err = svc.stderr()
    assert f"incident gpu_xid (restart): GPU 0 ({UUID0}): XID {xid} ({name})" in err
    assert "NVIDIA's action: restart the app" in err and again["pid"] != first["pid"]
    assert "gpu_fault" not in err


def test_an_xid_nvidia_asks_no_action_for_leaves_the_app_running(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """63 (a row remapped: IGNORE), 14 (an injected error: IGNORE, once outside the table and so exit 71), 45 (logged
    when an app is aborted) and 154 where NVML's recovery action cannot be read (the stand-in GPU has no such field):
    logged and counted, the app kept; the watch still acts on the next XID."""
    driver = _driver(tmp_path)
    svc = launch_service(env=standin_driver.launcher_env(driver))
    first = svc.wait_app()
    _watching(svc)
    quiet = (
        (63, "GPU memory remapping event"),
        (14, "ROBUST_CHANNEL_FAKE_ERROR, Unused in the catalogue"),
        (45, "Preemptive cleanup, due to previous errors"),
        (154, "GPU Recovery Action Changed); NVML's recovery action could not be read"),
    )
    for number, name in quiet:
        standin_driver.raise_xid(driver, 0, number)
        said = f"GPU 0 ({UUID0}): XID {number} ({name}"
        wait_for(lambda said=said: said in svc.stderr(), 15, f"XID {number} logged")
    assert svc.stderr().count("NVIDIA's action: none, the GPU stays in service") == len(quiet)
    standin_driver.raise_xid(driver, 0, 13)
    again = svc.wait_app(timeout=15, not_pid=first["pid"])
    svc.assert_alive()
    err = svc.stderr()
    assert "gpu_fault" not in err and err.count("incident gpu_xid") == 1, err[-3000:]
    assert _starts(svc) == 2 and again["pid"] != first["pid"]  # the first start, then 13's restart only


@pytest.mark.parametrize(
    ("fault", "said", "action"),
    [
        ("xid 79", "XID 79 (GPU has fallen off the bus)", "reboot the node"),
        ("xid 109", "XID 109 (Context Switch Timeout Error)", "reset the GPU"),
        ("xid 154 2", "XID 154 (GPU Recovery Action Changed): NVML's recovery action is 2", "reboot the node"),
        ("nvml 15", "NVML_ERROR_GPU_IS_LOST", "reboot the node"),
        ("nvml 999", "NVML Unknown Error", "recreate the container"),
    ],
)
def test_a_gpu_fault_stops_the_app_with_its_own_code(launch_service, tmp_path: Path, fault, said, action) -> None:  # type: ignore[no-untyped-def]
    driver = _driver(tmp_path)
    message = tmp_path / "termination-log"
    svc = launch_service(env={**standin_driver.launcher_env(driver), "HEYGEM_TERMINATION_LOG": str(message)})
    svc.wait_app()
    _watching(svc)
    kind, number, *recovery = fault.split()
    if kind == "xid":
        standin_driver.raise_xid(driver, 0, int(number), *map(int, recovery))
    else:
        standin_driver.raise_nvml_error(driver, int(number), gpu=0)
    assert svc.wait(timeout=30) == exitcodes.GPU_FAULT == 71
    err = svc.stderr()
    line = next(x for x in err.splitlines() if x.startswith("heygem-launch: GPU fault on"))
    assert f"GPU 0 ({UUID0})" in line and said in line and f"NVIDIA's action: {action}" in line, line
    assert "stopped (exit 71)" in err
    assert _starts(svc) == 1  # no second start onto the broken GPU
    assert message.read_text() == line.removeprefix("heygem-launch: ") + "\n"  # the platform's termination message


def test_under_any_only_the_faulted_gpus_app_stops(launch_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    driver = _driver(tmp_path, gpus=2)
    port = harness.free_ports(2)
    env = {
        **standin_driver.launcher_env(driver),
        "HEYGEM_GPUS": "2",
        "HEYGEM_GPU_POLICY": "any",
        "HEYGEM_APP_PORT": str(port),
        "GRADIO_SERVER_PORT": None,
    }
    svc = launch_service(env=env)
    first = wait_for(lambda: harness.get(port), 60, "app-0")
    wait_for(lambda: harness.get(port + 1), 60, "app-1")
    wait_for(lambda: "app-1 (GPU 1" in svc.stderr() and "started: pid" in svc.stderr(), 30, "app-1 started")
    standin_driver.raise_xid(driver, 1, 79)
    wait_for(lambda: "stopping app-1 only" in svc.stderr(), 30, "app-1 stopped")
    err = svc.stderr()
    assert f"GPU fault on GPU 1 ({UUID1}): XID 79" in err
    wait_for(lambda: harness.get(port + 1) is None, 15, "app-1 gone")
    assert harness.get(port)["pid"] == first["pid"]  # type: ignore[index]
    svc.assert_alive()
    svc.signal(signal.SIGTERM)
    assert svc.wait(timeout=30) == 0
