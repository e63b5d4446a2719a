"""GPU inventory from NVML (nvidia-ml-py), where a driver exists; why there is none otherwise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
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


NVML_LIBRARY = "libnvidia-ml.so.1"  # the driver's; what pynvml.nvmlInit() loads first


def _nvml_loads() -> bool:
    """Whether the driver's NVML library loads. Without it pynvml can only say so, and importing it costs
    ~20 ms of CPU beside the probe and ~5 MB that the launcher keeps for its whole run."""
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def inventory() -> Inventory:
    if not _nvml_loads():
        import importlib.util

        if importlib.util.find_spec("pynvml") is None:
            return Inventory(False, "nvidia-ml-py is not installed: no NVML inventory")
        return Inventory(False, f"no NVIDIA driver: {NVML_LIBRARY} not found")
    try:
        import pynvml  # ctypes over libnvidia-ml.so.1, and only needed here
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


@dataclass(frozen=True)
class Visibility:
    """What CUDA_VISIBLE_DEVICES leaves visible: `None` devices when there is no inventory to match against."""

    asked: str | None  # the variable's value; None when unset (every device visible)
    entries: tuple[str, ...]  # the entries CUDA accepts, in order (it stops at the first invalid one)
    devices: tuple[Gpu, ...] | None  # the devices those entries select; None without an NVML inventory
    unmatched: str | None  # the first entry that selects nothing (it and those after it are ignored)
    unverified: tuple[str, ...] = ()  # MIG instances by their own UUID: NVML's GPU list cannot confirm them

    @property
    def hides_all(self) -> bool:
        if self.asked is None:
            return False
        if self.devices is not None:
            return not self.devices and not self.unverified
        return not self.entries


_UUID_PREFIXES = ("GPU-", "MIG-")


def _entry_ok(entry: str) -> bool:
    # ASCII only: str.isdigit() takes `٢` and `²`, which the CUDA runtime does not read as indices.
    return (entry.isascii() and entry.isdigit()) or entry.startswith(_UUID_PREFIXES)


def _select(entry: str, gpus: tuple[Gpu, ...]) -> Gpu | None:
    if entry.isascii() and entry.isdigit():
        index = int(entry)
        return gpus[index] if index < len(gpus) else None
    # A UUID, whole or a unique prefix of one, as `nvidia-smi -L` prints it.
    matches = [g for g in gpus if g.uuid == entry or g.uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def visibility(value: str | None, inventory: Inventory) -> Visibility:
    """Pure: CUDA_VISIBLE_DEVICES read as the CUDA runtime reads it.

    A comma-separated list of device indices or `GPU-`/`MIG-` UUIDs; parsing stops at the first entry that
    is invalid or matches no device, and the ones after it are ignored, so `""`, `-1` and `none` hide every
    device; a UUID may be abbreviated to a unique prefix (source: CUDA C Programming Guide, "CUDA
    Environment Variables"; `none` is only special to NVIDIA_VISIBLE_DEVICES of the container runtime, for
    CUDA it is an invalid entry). A MIG instance's own UUID is taken as visible: NVML's GPU list cannot
    confirm it.
    """
    if value is None:
        return Visibility(None, (), inventory.gpus if inventory.available else None, None)
    entries: list[str] = []
    unmatched = None
    for raw in value.split(","):
        entry = raw.strip()
        if not _entry_ok(entry):
            unmatched = entry
            break
        entries.append(entry)
    if not inventory.available:
        return Visibility(value, tuple(entries), None, unmatched)
    devices: list[Gpu] = []
    unverified: list[str] = []
    for entry in entries:
        if entry.startswith("MIG-") and not entry.startswith("MIG-GPU-"):
            unverified.append(entry)  # a MIG instance's own UUID: only the driver knows it
            continue
        # The older MIG form names its parent GPU: MIG-GPU-<uuid>/<instance>/<compute instance>.
        gpu = _select(entry.removeprefix("MIG-").split("/")[0], inventory.gpus)
        if gpu is None or gpu in devices:
            unmatched = entry
            break
        devices.append(gpu)
    return Visibility(value, tuple(entries), tuple(devices), unmatched, tuple(unverified))
