"""GPU inventory from NVML (nvidia-ml-py), where a driver exists; why there is none otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the probe's critical path
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML reports it. The health fields are None where NVML does not support the query on this GPU
    (a GeForce has no ECC; row remapping came with Ampere; the recovery action with driver R570)."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int
    utilization_percent: int | None
    processes: int | None
    memory_free_mib: int | None = None
    process_pids: tuple[int, ...] = ()  # NVML's compute processes on it (host PIDs)
    compute_mode: int | None = None  # NVML_COMPUTEMODE_*: 0 default, 1 exclusive thread, 2 prohibited, 3 excl. process
    retired_pages_pending: bool | None = None  # nvmlDeviceGetRetiredPagesPendingStatus
    remapped_rows_pending: bool | None = None  # nvmlDeviceGetRemappedRows: a remap waits for a GPU reset
    remapped_rows_failure: bool | None = None  # ... a remap failed
    ecc_volatile_uncorrected: int | None = None  # nvmlDeviceGetTotalEccErrors(UNCORRECTED, VOLATILE_ECC)
    clocks_event_reasons: int | None = None  # nvmlDeviceGetCurrentClocksEventReasons, a bit mask
    mig_mode: int | None = None  # nvmlDeviceGetMigMode's current mode: 1 enabled
    recovery_action: int | None = None  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: 0 none, 1 GPU reset, 2 node reboot...


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


def _optional(pynvml: Any, query: Callable[[], Any]) -> Any:
    """A query's answer, or None where NVML does not support it on this GPU (or fails it alone)."""
    try:
        return query()
    except pynvml.NVMLError:
        return None


def recovery_action(pynvml: Any, handle: Any) -> int | None:
    """The driver's recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, drivers R570 and later; source: NVML API
    reference, "Field Value Queries" and nvmlDeviceGpuRecoveryAction_t); None where the driver has no such field."""
    field_id = getattr(pynvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
    if field_id is None:
        return None
    value = _optional(pynvml, lambda: pynvml.nvmlDeviceGetFieldValues(handle, [field_id])[0])
    return None if value is None or value.nvmlReturn != pynvml.NVML_SUCCESS else int(value.value.uiVal)


def _device(pynvml: Any, index: int) -> Gpu:
    """One GPU's figures and health (raises NVMLError when the GPU cannot be read at all: no handle, no memory)."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    pids = _optional(pynvml, lambda: tuple(p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)))
    remapped = _optional(pynvml, lambda: pynvml.nvmlDeviceGetRemappedRows(handle))
    pending = _optional(pynvml, lambda: pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    ecc = _optional(
        pynvml,
        lambda: pynvml.nvmlDeviceGetTotalEccErrors(
            handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        ),
    )
    mig = _optional(pynvml, lambda: pynvml.nvmlDeviceGetMigMode(handle))
    return Gpu(
        index,
        _text(pynvml.nvmlDeviceGetName(handle)),
        _text(pynvml.nvmlDeviceGetUUID(handle)),
        memory.total // 2**20,
        memory.used // 2**20,
        _optional(pynvml, lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        None if pids is None else len(pids),
        memory.free // 2**20,
        pids or (),
        _optional(pynvml, lambda: pynvml.nvmlDeviceGetComputeMode(handle)),
        None if pending is None else bool(pending),
        None if remapped is None else bool(remapped[2]),
        None if remapped is None else bool(remapped[3]),
        ecc,
        _optional(pynvml, lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)),
        None if mig is None else int(mig[0]),
        recovery_action(pynvml, handle),
    )


NVML_LIBRARY = "libnvidia-ml.so.1"  # the driver's; what pynvml.nvmlInit() loads first


def nvml_loads() -> bool:
    """Whether the driver's NVML library loads. Without it pynvml can only say so, and importing it costs
    ~20 ms of CPU beside the probe and ~5 MB that the launcher keeps for its whole run."""
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def inventory() -> Inventory:
    if not nvml_loads():
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
        gpus = tuple(_device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount()))
        return Inventory(True, "", driver, f"{cuda // 1000}.{cuda % 1000 // 10}", gpus)
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
