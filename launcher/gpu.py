"""GPU inventory from NVML (nvidia-ml-py), where a driver exists; why there is none otherwise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int
    utilization_percent: int | None
    processes: int | None


@dataclass(frozen=True)
class Inventory:
    available: bool
    reason: str = ""  # why NVML gave nothing: no driver, NVML error
    driver_version: str = ""
    cuda_driver_version: str = ""  # the newest CUDA the driver supports, "13.0"
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    @property
    def cuda_driver_major(self) -> int | None:
        return int(self.cuda_driver_version.split(".")[0]) if self.cuda_driver_version else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inventory() -> Inventory:
    try:
        import pynvml  # ctypes over libnvidia-ml.so.1; cheap, and only needed here
    except ImportError:
        return Inventory(False, "nvidia-ml-py is not installed: no NVML inventory")

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return Inventory(False, "no NVIDIA driver: libnvidia-ml.so.1 not found")
    except pynvml.NVMLError as exc:
        return Inventory(False, f"NVML failed to start: {exc}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: int | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except pynvml.NVMLError:
                utilization = None
            try:
                processes: int | None = len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
            except pynvml.NVMLError:
                processes = None
            gpus.append(
                Gpu(
                    index,
                    _text(pynvml.nvmlDeviceGetName(handle)),
                    _text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory.total // 2**20,
                    memory.used // 2**20,
                    utilization,
                    processes,
                )
            )
        return Inventory(True, "", driver, f"{cuda // 1000}.{cuda % 1000 // 10}", tuple(gpus))
    except pynvml.NVMLError as exc:
        return Inventory(False, f"NVML query failed: {exc}")
    finally:
        pynvml.nvmlShutdown()
