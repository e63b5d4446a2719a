"""The GPU watch (launcher/system/gpuevents.py) against a STAND-IN NVIDIA DRIVER (tests/standin_driver.py: a
libnvidia-ml.so.1 built with cc, because no CPU machine has a driver or a GPU that faults): the driver delivers the
XIDs and NVML errors the test raises, through NVML's event API as nvidia-ml-py calls it. A child process runs the
watch, because pynvml dlopens libnvidia-ml.so.1 from the loader's path as the process started."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.system import xids
from tests import standin_driver, stubelf
from tests.standin_driver import StandInDriver, StandInGpu

pytestmark = pytest.mark.skipif(stubelf.cc() is None, reason="no C compiler to build the stand-in driver")

CHILD = """
import json, os, sys
from launcher.system.gpuevents import GpuWatch
r, w = os.pipe()
watch = GpuWatch(lambda: os.write(w, b"x"))
print(json.dumps({"start": watch.start(), "notes": watch.notes, "gpus": [g.index for g in watch.watched]}), flush=True)
while True:
    os.read(r, 64)
    for item in watch.take():
        print(json.dumps(item if isinstance(item, str) else item.__dict__), flush=True)
"""


class Child:
    def __init__(self, driver: Path) -> None:
        env = {**standin_driver.launcher_env(driver), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env)

    def line(self) -> object:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def two_gpus(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = standin_driver.install(tmp_path / "driver", StandInDriver(gpus=(StandInGpu(), StandInGpu())))
    child = Child(folder)
    yield folder, child
    child.close()


def test_an_xid_is_delivered_with_its_gpu(two_gpus) -> None:  # type: ignore[no-untyped-def]
    folder, child = two_gpus
    assert child.line() == {"start": None, "notes": [], "gpus": [0, 1]}
    standin_driver.raise_xid(folder, 1, 79)
    event = child.line()
    assert isinstance(event, dict)
    assert (event["index"], event["xid"], event["error"]) == (1, 79, None)
    assert event["uuid"] == "GPU-00000000-0000-0000-0000-000000000001"


def test_a_lost_gpu_is_named_and_the_other_still_watched(two_gpus) -> None:  # type: ignore[no-untyped-def]
    folder, child = two_gpus
    child.line()
    standin_driver.raise_nvml_error(folder, standin_driver.NVML_ERROR_GPU_IS_LOST, gpu=0)
    event = child.line()
    assert isinstance(event, dict) and (event["index"], event["error"]) == (0, xids.NVML_GPU_IS_LOST)
    standin_driver.raise_xid(folder, 1, 13)
    event = child.line()
    assert isinstance(event, dict) and (event["index"], event["xid"]) == (1, 13)


def test_unknown_error_concerns_every_gpu(two_gpus) -> None:  # type: ignore[no-untyped-def]
    folder, child = two_gpus
    child.line()
    standin_driver.raise_nvml_error(folder, standin_driver.NVML_ERROR_UNKNOWN)
    events = [child.line(), child.line()]
    assert sorted((e["index"], e["error"]) for e in events if isinstance(e, dict)) == [(0, 999), (1, 999)]


def test_a_gpu_without_events_is_noted(tmp_path: Path) -> None:
    folder = standin_driver.install(
        tmp_path / "driver", StandInDriver(gpus=(StandInGpu(events=standin_driver.NOT_SUPPORTED), StandInGpu()))
    )
    child = Child(folder)
    try:
        first = child.line()
        assert isinstance(first, dict) and first["gpus"] == [1] and "GPU 0" in first["notes"][0]
    finally:
        child.close()


def test_the_waiting_thread_sleeps(two_gpus) -> None:  # type: ignore[no-untyped-def]
    """No polling: the child, waiting for events, uses no CPU over a second (a poll every 100 ms would show)."""
    _folder, child = two_gpus
    child.line()
    stat = Path(f"/proc/{child.proc.pid}/stat")

    def ticks() -> int:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    time.sleep(0.3)
    before = ticks()
    time.sleep(1.5)
    assert ticks() - before <= 1


def test_xid_154_carries_nvmls_recovery_action(two_gpus) -> None:  # type: ignore[no-untyped-def]
    """154 comes with the recovery action read at once (the stand-in's changed to 2 just before); on a GPU whose
    driver has no such field it comes with None."""
    folder, child = two_gpus
    child.line()
    standin_driver.raise_xid(folder, 1, 154, recovery_action=standin_driver.RECOVERY_NODE_REBOOT)
    event = child.line()
    assert isinstance(event, dict) and (event["index"], event["xid"], event["recovery"]) == (1, 154, 2)
    standin_driver.raise_xid(folder, 0, 154)
    event = child.line()
    assert isinstance(event, dict) and (event["index"], event["xid"], event["recovery"]) == (0, 154, None)
    standin_driver.raise_xid(folder, 0, 13)
    event = child.line()
    assert isinstance(event, dict) and event["recovery"] is None  # read only for 154


def test_the_table_follows_nvidia() -> None:
    """NVIDIA's catalogue (launcher/system/xids.py names it): its RESTART_APP rows and 43 restart the app, its IGNORE
    rows and 45 ask nothing, 79 wants a reboot; an XID outside it is the device plugin's reset."""
    assert all(xids.xid(n).application for n in (8, 13, 31, 32, 39, 43, 68, 69, 80, 94))
    assert all(xids.xid(n).action == xids.NO_ACTION for n in (14, 37, 38, 44, 45, 63, 92, 93, 121, 137))
    assert all(xids.xid(n).action == xids.RESET_GPU for n in (48, 61, 62, 64, 74, 95, 109, 119, 120, 144))
    assert xids.xid(79).action == xids.REBOOT_NODE
    assert xids.xid(9999).action == xids.RESET_GPU
    assert xids.lost(999) is not None and xids.lost(999)[1] == xids.RECREATE_CONTAINER
    assert xids.lost(3) is None


@pytest.mark.parametrize(
    ("recovery", "action"),
    [
        (None, xids.NO_ACTION),  # not readable: the XID 154 accompanies carries the action
        (0, xids.NO_ACTION),
        (1, xids.RESET_GPU),
        (2, xids.REBOOT_NODE),
        (3, xids.RESTART_APP),
        (4, xids.RESET_GPU),
        (99, xids.RESET_GPU),  # a value newer than this table: as an unknown XID
    ],
)
def test_xid_154_acts_as_the_recovery_action(recovery: int | None, action: str) -> None:
    what, got = xids.fault(154, recovery)
    assert got == action and what.startswith("XID 154 (GPU Recovery Action Changed)")
