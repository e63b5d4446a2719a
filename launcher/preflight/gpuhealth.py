"""Pure: a GPU's health before the app starts, from NVML's figures (launcher.system.gpu.Gpu), as a table of
conditions, each a refusal or a warning with its fix.

Refusals are what NVIDIA's memory-error guide and its recovery actions say make a GPU unfit for new work until it is
reset or the node rebooted (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt, "Error Recovery and Response Flags";
NVML API reference, nvmlDeviceGetRemappedRows, nvmlDeviceGetRetiredPagesPendingStatus, nvmlDeviceGetTotalEccErrors,
nvmlDeviceGpuRecoveryAction_t), and a compute mode that forbids CUDA contexts. Warnings are what makes the app slow
or short of memory without stopping it: clocks held down (nvmlClocksEventReason*), other processes, little free
memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from launcher.system.gpu import Gpu

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms beside the probe
if TYPE_CHECKING:
    from typing import Any

# NVML's numbers (nvml.h; nvidia-ml-py's constants of the same names).
COMPUTEMODE_EXCLUSIVE_THREAD, COMPUTEMODE_PROHIBITED, COMPUTEMODE_EXCLUSIVE_PROCESS = 1, 2, 3
COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}
THERMAL = {0x20: "SW thermal slowdown", 0x40: "HW thermal slowdown", 0x8: "HW slowdown"}
POWER = {0x4: "SW power cap", 0x80: "HW power brake slowdown"}
RECOVERY_ACTIONS = {
    1: ("a GPU reset", "stop every process on it and reset it (`nvidia-smi -r -i {index}`)"),
    2: ("a node reboot", "reboot the node"),
    3: ("draining peer-to-peer traffic", "stop the workloads using it (peer-to-peer), then start new ones"),
    4: ("draining and a GPU reset", "stop every process on it, then reset it (`nvidia-smi -r -i {index}`)"),
    5: ("the IMEX domain recovered", "recover the IMEX domain (restart nvidia-imex on the nodes)"),
    6: ("a PCIe bus reset", "reset the GPU's bus (`nvidia-smi -r -i {index}`, or reboot the node)"),
    7: ("a system reboot", "reboot the system"),
}
# Below this much free memory a warning is given when HEYGEM_GPU_MEMORY_MIN is not set: HeyGem's models alone take
# about 2 GiB (its face and audio models under ONNX Runtime and torch).
DEFAULT_MEMORY_WARN_MIB = 2048

GPU_UNHEALTHY = "gpu_unhealthy"
GPU_MEMORY_LOW = "gpu_memory_low"


@dataclass(frozen=True)
class Finding:
    gpu: int
    uuid: str
    condition: str  # the table's id: row_remapping_failed, compute_mode_prohibited...
    refuse: bool  # a refusal (69), else a warning
    cause: str  # gpu_unhealthy, gpu_memory_low: the verdict's cause when it refuses
    message: str
    fix: str

    def line(self) -> str:
        return f"[{self.gpu}] {'REFUSE' if self.refuse else 'warn'} {self.condition}: {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Condition:
    id: str
    cause: str
    test: Callable[[Gpu, int | None], bool]  # (the GPU, HEYGEM_GPU_MEMORY_MIN in MiB or None) -> found
    message: Callable[[Gpu], str]
    fix: str  # may name {index}
    refuse: Callable[[int | None], bool] = lambda _min: True


def _bits(mask: int | None, names: dict[int, str]) -> list[str]:
    return [name for bit, name in names.items() if mask and mask & bit]


def _others(g: Gpu) -> str:
    return ", ".join(map(str, g.process_pids))


def _low_memory(g: Gpu, minimum: int | None) -> bool:
    return g.memory_free_mib is not None and g.memory_free_mib < (minimum or DEFAULT_MEMORY_WARN_MIB)


# The table: refusals first (the first that holds is the verdict's cause), then warnings.
CONDITIONS: tuple[Condition, ...] = (
    Condition(
        "row_remapping_failed",
        GPU_UNHEALTHY,
        lambda g, _m: g.remapped_rows_failure is True,
        lambda g: "a memory row remapping failed (nvmlDeviceGetRemappedRows): the GPU has faulty memory",
        "take the GPU out of service (NVIDIA's RMA policy for row-remapping failures); use another GPU",
    ),
    Condition(
        "row_remapping_pending",
        GPU_UNHEALTHY,
        lambda g, _m: g.remapped_rows_pending is True,
        lambda g: "a memory row remapping is pending (nvmlDeviceGetRemappedRows): it takes effect at the next reset",
        "stop every process on the GPU and reset it (`nvidia-smi -r -i {index}`), or reboot the node",
    ),
    Condition(
        "retired_pages_pending",
        GPU_UNHEALTHY,
        lambda g, _m: g.retired_pages_pending is True,
        lambda g: "memory pages are pending retirement (nvmlDeviceGetRetiredPagesPendingStatus)",
        "stop every process on the GPU and reset it (`nvidia-smi -r -i {index}`), or reboot the node",
    ),
    Condition(
        "ecc_uncorrectable",
        GPU_UNHEALTHY,
        lambda g, _m: bool(g.ecc_volatile_uncorrected),
        lambda g: f"{g.ecc_volatile_uncorrected} uncorrectable ECC error(s) since the driver loaded (volatile)",
        "stop every process on the GPU and reset it (`nvidia-smi -r -i {index}`); if they come back, replace it",
    ),
    Condition(
        "recovery_action",
        GPU_UNHEALTHY,
        lambda g, _m: g.recovery_action not in (None, 0),
        lambda g: (
            f"the driver asks for {RECOVERY_ACTIONS.get(g.recovery_action or 0, ('a recovery',))[0]} "
            f"(NVML recovery action {g.recovery_action})"
        ),
        "",  # from RECOVERY_ACTIONS
    ),
    Condition(
        "compute_mode_prohibited",
        GPU_UNHEALTHY,
        lambda g, _m: g.compute_mode == COMPUTEMODE_PROHIBITED,
        lambda g: "its compute mode is Prohibited: no process may create a CUDA context on it",
        "set it back to Default on the host (`nvidia-smi -i {index} -c DEFAULT`), or give the container another GPU",
    ),
    Condition(
        "memory_low",
        GPU_MEMORY_LOW,
        _low_memory,
        lambda g: f"only {g.memory_free_mib} MiB of {g.memory_total_mib} MiB free",
        "stop what holds the GPU's memory (`nvidia-smi`), or give the app another GPU",
        refuse=lambda minimum: minimum is not None,
    ),
    Condition(
        "thermal_slowdown",
        GPU_UNHEALTHY,
        lambda g, _m: bool(_bits(g.clocks_event_reasons, THERMAL)),
        lambda g: "its clocks are held down: " + ", ".join(_bits(g.clocks_event_reasons, THERMAL)),
        "check the GPU's cooling (`nvidia-smi -q -d TEMPERATURE,PERFORMANCE`); the app runs, slower",
        refuse=lambda _min: False,
    ),
    Condition(
        "power_slowdown",
        GPU_UNHEALTHY,
        lambda g, _m: bool(_bits(g.clocks_event_reasons, POWER)),
        lambda g: "its clocks are held down: " + ", ".join(_bits(g.clocks_event_reasons, POWER)),
        "check the power limit and supply (`nvidia-smi -q -d POWER,PERFORMANCE`); the app runs, slower",
        refuse=lambda _min: False,
    ),
    Condition(
        "other_processes",
        GPU_UNHEALTHY,
        lambda g, _m: bool(g.process_pids),
        lambda g: (
            f"other processes use it (pids {_others(g)}, as the host numbers them)"
            + (f"; compute mode {COMPUTE_MODES[g.compute_mode]}" if g.compute_mode in (1, 3) else "")
        ),
        "stop them, or give the app a GPU of its own; they share its memory and time",
        refuse=lambda _min: False,
    ),
)


def assess(gpu: Gpu, memory_min_mib: int | None = None) -> tuple[Finding, ...]:
    """Pure: what the table finds on one GPU, refusals first. `memory_min_mib`: HEYGEM_GPU_MEMORY_MIN in MiB (None:
    not set, so low free memory only warns, under DEFAULT_MEMORY_WARN_MIB)."""
    found = []
    for c in CONDITIONS:
        if not c.test(gpu, memory_min_mib):
            continue
        fix = c.fix or RECOVERY_ACTIONS.get(gpu.recovery_action or 0, ("", "reset the GPU or reboot the node"))[1]
        message = c.message(gpu)
        if c.id == "memory_low" and memory_min_mib is not None:
            message += f", below HEYGEM_GPU_MEMORY_MIN ({memory_min_mib} MiB)"
        refuse = c.refuse(memory_min_mib)
        found.append(Finding(gpu.index, gpu.uuid, c.id, refuse, c.cause, message, fix.format(index=gpu.index)))
    return tuple(sorted(found, key=lambda f: not f.refuse))
