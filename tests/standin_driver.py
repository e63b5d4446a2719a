"""A stand-in NVIDIA driver for tests on machines without a GPU: real shared libraries built with `cc` at test time
from tests/standin/*.c (cached like tests/stubelf.py's), answering from a settings file.

- `libnvidia-ml.so.1` answers nvidia-ml-py (the launcher's NVML inventory and GPU health) from `StandInGpu`s.
- `libcuda.so.1`'s cuInit returns `cu_init`, so that NVIDIA's real libcudart, and onnxruntime-gpu 1.16.3 over it,
  print CUDA's own text for that code (100, 802, 804, 999, 46...). What does not work: with it on the path,
  onnxruntime-gpu 1.20 (CUDA 12) loads its provider, whose static initialisers then crash in one of tests/stubelf.py's
  cuDNN/cuBLAS stand-ins (a function returning 0 where a pointer is expected; gdb: SIGSEGV in the provider under
  dl-init's call_init), and 1.31's provider imports driver symbols (cuTensorMapEncodeTiled...) it does not export;
  the tests that use it run 1.16.3.

It stands in for the driver only, never for the library table: the launcher still resolves every CUDA library
itself. Use: `folder = install(tmp_path / "driver", StandInDriver(gpus=(StandInGpu(compute_mode=2),)))`, then put
`folder` on LD_LIBRARY_PATH of the launcher's process (pynvml dlopens `libnvidia-ml.so.1`; the probe inherits it).
The libraries read `stand-in-driver.conf` next to themselves as the loader found them, so each folder is a driver.

- NVML events: `raise_xid(folder, gpu, xid)` makes the driver in `folder` deliver an XidCriticalError event to the
  processes waiting in nvmlEventSetWait_v2 (the launcher's GPU watch) while they run (with `recovery_action=N`, the
  GPU's recovery action changes to N first, as the driver's does before XID 154); `raise_nvml_error(folder, 15)`
  makes the wait (and then every query on that GPU) fail with that NVML error: 15 GPU_IS_LOST, 999 Unknown Error.
  What a real driver does then (which XIDs come, when NVML says the GPU is lost) is NVIDIA's; the stand-in only
  delivers what the test says, the way nvml.h's API delivers it.

A new knob is a field here, written by `settings_text` as `gpu.N.<key>`, and read there with
`standin_gpu_get(index, "<key>")`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests import envs, stubelf

SOURCES = Path(__file__).with_name("standin")
LIBRARIES = {"libnvidia-ml.so.1": "libnvidia-ml.c", "libcuda.so.1": "libcuda.c"}
CONF = "stand-in-driver.conf"
EVENTS = "nvml-events"  # the lines nvmlEventSetWait_v2 delivers, appended by raise_xid / raise_nvml_error
NOT_SUPPORTED = "!3"  # a query's value: NVML_ERROR_NOT_SUPPORTED, as a real driver answers for what a GPU lacks

# NVML's own numbers (nvml.h; nvidia-ml-py's constants of the same names).
COMPUTEMODE_DEFAULT, COMPUTEMODE_PROHIBITED, COMPUTEMODE_EXCLUSIVE_PROCESS = 0, 2, 3
CLOCKS_EVENT_SW_POWER_CAP, CLOCKS_EVENT_HW_SLOWDOWN = 0x4, 0x8
CLOCKS_EVENT_SW_THERMAL, CLOCKS_EVENT_HW_THERMAL, CLOCKS_EVENT_HW_POWER_BRAKE = 0x20, 0x40, 0x80
RECOVERY_NONE, RECOVERY_GPU_RESET, RECOVERY_NODE_REBOOT, RECOVERY_DRAIN_P2P = 0, 1, 2, 3
NVML_ERROR_GPU_IS_LOST, NVML_ERROR_UNKNOWN = 15, 999


@dataclass(frozen=True)
class StandInGpu:
    """One GPU as NVML reports it. A field set to NOT_SUPPORTED makes its query fail that way."""

    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = ""  # default GPU-00000000-0000-0000-0000-00000000000N
    memory_total_mib: int = 24564
    memory_used_mib: int = 0
    utilization: int = 0
    processes: tuple[tuple[int, int], ...] = ()  # (pid, MiB) NVML lists as compute processes
    retired_pages_pending: int | str = 0
    remapped_rows: str = ""  # NOT_SUPPORTED on GPUs before Ampere
    remapped_rows_pending: int = 0
    remapped_rows_failure: int = 0
    ecc: str = ""  # NOT_SUPPORTED on GeForce
    ecc_volatile_uncorrected: int = 0
    clocks_event_reasons: int = 0
    compute_mode: int = COMPUTEMODE_DEFAULT
    mig_mode: int | str = 0
    recovery_action: int | str | None = None  # None: the driver has no such field (older than R570)
    events: str = ""  # NOT_SUPPORTED: nvmlDeviceRegisterEvents refuses this GPU

    def settings(self, index: int) -> dict[str, str]:
        values: dict[str, object] = {
            "name": self.name,
            "memory_total_mib": self.memory_total_mib,
            "memory_used_mib": self.memory_used_mib,
            "utilization": self.utilization,
            "processes": ",".join(f"{pid}:{mib}" for pid, mib in self.processes),
            "retired_pages_pending": self.retired_pages_pending,
            "remapped_rows": self.remapped_rows,
            "remapped_rows_pending": self.remapped_rows_pending,
            "remapped_rows_failure": self.remapped_rows_failure,
            "ecc": self.ecc,
            "ecc_volatile_uncorrected": self.ecc_volatile_uncorrected,
            "clocks_event_reasons": self.clocks_event_reasons,
            "compute_mode": self.compute_mode,
            "mig_mode": self.mig_mode,
            "uuid": self.uuid,
            "recovery_action": self.recovery_action,
            "events": self.events,
        }
        return {f"gpu.{index}.{k}": str(v) for k, v in values.items() if v not in ("", None)}


@dataclass(frozen=True)
class StandInDriver:
    driver_version: str = "550.54.15"
    cuda_driver_version: int = 12040  # 1000 * major + 10 * minor, as NVML and cuDriverGetVersion give it
    gpus: Sequence[StandInGpu] = field(default_factory=lambda: (StandInGpu(),))
    cu_init: int = 0  # what cuInit returns: 0, or a CUresult (100, 802, 804, 999, 46...)
    nvml_init: int = 0  # what nvmlInit returns: 0, or an NVML error (9: driver not loaded)

    def settings_text(self) -> str:
        lines = {
            "driver_version": self.driver_version,
            "cuda_driver_version": str(self.cuda_driver_version),
            "gpu_count": str(len(self.gpus)),
            "cuda.init": str(self.cu_init),
            "nvml.init": str(self.nvml_init),
        }
        for index, gpu in enumerate(self.gpus):
            lines.update(gpu.settings(index))
        return "".join(f"{key} {value}\n" for key, value in lines.items())


def build() -> Path:
    """The two libraries, built once per source (cached under HEYGEM_TEST_CACHE); RuntimeError without cc."""
    compiler = stubelf.cc()
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the stand-in NVIDIA driver")
    sources = sorted(SOURCES.iterdir())
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()

    def make(out: Path) -> None:
        import subprocess

        out.mkdir(parents=True, exist_ok=True)
        for soname, source in LIBRARIES.items():
            flags = ["-shared", "-fPIC", "-O1", "-Wall", f"-Wl,-soname,{soname}"]
            subprocess.run([compiler, *flags, "-o", str(out / soname), str(SOURCES / source), "-ldl"], check=True)

    return envs._cached("stand-in-driver", [digest], make)


def install(
    folder: Path,
    driver: StandInDriver,
    *,
    nvml: bool = True,
    cuda: bool = True,
    libcuda_folder: Path | None = None,
    copies: bool = False,
) -> Path:
    """A driver in `folder` (links to the built libraries and its settings); returns `folder`. `nvml`/`cuda`: which
    library it has; `libcuda_folder`: put libcuda.so.1 (with its own copy of the settings) there instead, e.g. an
    image's `compat/` folder; `copies`: copies of the libraries instead of links, for a folder mounted into a
    container, which does not see the cache the links point into."""
    built = build()
    folder.mkdir(parents=True, exist_ok=True)
    places = [(nvml, folder, "libnvidia-ml.so.1"), (cuda, libcuda_folder or folder, "libcuda.so.1")]
    for wanted, where, soname in places:
        if wanted:
            where.mkdir(parents=True, exist_ok=True)
            link = where / soname
            if link.is_symlink() or link.exists():
                link.unlink()
            if copies:
                shutil.copy2(built / soname, link)
            else:
                link.symlink_to(built / soname)
            (where / CONF).write_text(driver.settings_text() + f"events {folder.resolve() / EVENTS}\n")
    return folder


def _event_line(folder: Path, line: str) -> None:
    # One write of a whole line: the waiting driver reads only lines that end.
    with open(folder / EVENTS, "a") as events:
        events.write(line + "\n")


def raise_xid(folder: Path, gpu: int, xid: int, recovery_action: int | None = None) -> None:
    """The driver in `folder` reports XID `xid` on GPU `gpu` (NVML's index) to every process waiting for events.
    `recovery_action`: the GPU's recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION) changes to it first, as the
    driver's does before XID 154 (seen by the process that takes the event, from then on)."""
    _event_line(folder, f"{gpu} {xid}" + ("" if recovery_action is None else f" {recovery_action}"))


def raise_nvml_error(folder: Path, error: int, gpu: int | None = None) -> None:
    """The event wait fails with NVML error `error`, and every later query on GPU `gpu` (None: every GPU) with it."""
    _event_line(folder, f"{'*' if gpu is None else gpu} !{error}")


def launcher_env(*folders: Path) -> dict[str, str]:
    """The environment that puts the stand-in driver's folders in front of the loader's search, for the launcher
    and (inherited) the probe."""
    return {"LD_LIBRARY_PATH": os.pathsep.join(str(f) for f in folders)}
