"""Pure: what a GPU fault at run time asks for, as NVIDIA says it. The one table of XIDs, as data.

Sources:
- NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors, "Analyzing Xid Errors with the Xid Catalog"): each XID's
  immediate action (its "Resolution Bucket (Immediate Action)": RESTART_APP, RESET_GPU, RESTART_BM / node reboot).
- NVIDIA's device plugin (NVIDIA/k8s-device-plugin, internal/rm/health.go): the application XIDs 13, 31, 43, 45,
  68, 109, which it ignores (the application's own fault: the GPU stays healthy); any other XID marks the GPU
  unhealthy. An XID this table lacks is read the same way: the GPU is not to be trusted until it is reset.
- A lost GPU: NVML calls return NVML_ERROR_GPU_IS_LOST after XID 79 (nvml.h); NVML's `Unknown Error` in a running
  container that had its GPU is the device cgroup rewritten under it (a `systemctl daemon-reload` on the host), and
  NVIDIA's notice (NVIDIA/nvidia-container-toolkit#48) says the container must be recreated.
"""

from __future__ import annotations

from dataclasses import dataclass

RESTART_APP = "restart the app"
RESET_GPU = "reset the GPU"
REBOOT_NODE = "reboot the node"
RECREATE_CONTAINER = "recreate the container"


@dataclass(frozen=True)
class Xid:
    name: str
    action: str  # NVIDIA's immediate action: RESTART_APP (the app's own fault) or what the GPU needs

    @property
    def application(self) -> bool:
        """The app's own fault: restarting the app is the whole cure, the GPU is fine."""
        return self.action == RESTART_APP


XIDS: dict[int, Xid] = {
    # The application XIDs (the device plugin's ignore list): restart the app.
    13: Xid("Graphics Engine Exception", RESTART_APP),
    31: Xid("GPU memory page fault", RESTART_APP),
    43: Xid("GPU stopped processing", RESTART_APP),
    45: Xid("Preemptive cleanup, due to previous errors", RESTART_APP),
    68: Xid("NVDEC0 Exception", RESTART_APP),
    109: Xid("Context Switch Timeout Error", RESTART_APP),
    # Contained ECC error: only the process that touched the memory ends (catalogue: RESTART_APP).
    94: Xid("Contained ECC error", RESTART_APP),
    # The GPU needs a reset.
    48: Xid("Double Bit ECC Error", RESET_GPU),
    61: Xid("Internal micro-controller breakpoint/warning", RESET_GPU),
    62: Xid("Internal micro-controller halt", RESET_GPU),
    63: Xid("ECC page retirement or row remapping recording event", RESET_GPU),
    64: Xid("ECC page retirement or row remapper recording failure", RESET_GPU),
    74: Xid("NVLINK Error", RESET_GPU),
    92: Xid("High single-bit ECC error rate", RESET_GPU),
    95: Xid("Uncontained ECC error", RESET_GPU),
    119: Xid("GSP RPC Timeout", RESET_GPU),
    120: Xid("GSP Error", RESET_GPU),
    # The node needs a reboot.
    79: Xid("GPU has fallen off the bus", REBOOT_NODE),
}

# NVML errors that say the GPU (or the container's access to it) is gone, and what NVIDIA says to do.
NVML_GPU_IS_LOST = 15
NVML_UNKNOWN = 999
LOST: dict[int, tuple[str, str]] = {
    NVML_GPU_IS_LOST: ("NVML_ERROR_GPU_IS_LOST: the GPU is lost", REBOOT_NODE),
    NVML_UNKNOWN: (
        "NVML Unknown Error: the container lost its GPU devices (device cgroup rewritten)",
        RECREATE_CONTAINER,
    ),
}


def xid(number: int) -> Xid:
    """The table's entry for XID `number`; one not in it is taken as the device plugin takes it: reset the GPU."""
    return XIDS.get(
        number, Xid("not in heygem-launch's table: NVIDIA's device plugin marks the GPU unhealthy", RESET_GPU)
    )


def lost(error: int) -> tuple[str, str] | None:
    """What an NVML error from the event wait means: (what, NVIDIA's action) for a lost GPU, None for another error
    (which says nothing about the GPU)."""
    return LOST.get(error)
