"""Pure: what a GPU fault at run time asks for, as NVIDIA says it. The one table of XIDs, as data.

Sources:
- Every row but 61: NVIDIA's Xid catalogue for Ampere and newer GPUs, "Analyzing Xid Errors with the Xid Catalog"
  (https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, sheet "Xids" of
  https://docs.nvidia.com/Xid-Catalog.xlsx), checked row by row against the page as stored in December 2026 (its
  Xids sheet runs to XID 172). `name` is the row's Description (to its first clause); the comment gives its Mnemonic
  and its "Resolution Bucket (Immediate Action)", "the action that is immediately needed in order to recover the
  system and get it back into service", which `action` follows, as the catalogue's "Fault Resolution Buckets" sheet
  defines the buckets:
  RESTART_APP ("The application should be restarted; RESET_GPU or RESTART_BM is not deemed necessary") -> restart
  the app; RESET_GPU -> reset the GPU; RESTART_BM ("Restart bare metal") -> reboot the node; IGNORE ("No Action
  required") -> none: the XID is logged and counted, the app keeps running. Three rows have a workflow instead of a
  bucket, read for one XID on one GPU: WORKFLOW_XID_48 ("Solo: RESET_GPU"), WORKFLOW_NVLINK_ERR (its trigger text:
  "A GPU reset or node reboot is needed to clear this error"), WORKFLOW_XID_45 ("Solo: RESTART_FM", the NVSwitch
  fabric manager, no action of the app's; "Not Solo: IGNORE (follow guidance in other Xid)").
- One reading of ours: XID 43's bucket is IGNORE ("The GPU remains in a healthy state"), but its trigger text says the
  application "hits a software induced fault and must terminate": that is the app's restart here, as for RESTART_APP.
- Row 61 is not confirmed by the catalogue, which lists it as Unused on A100, H100, B100 and GB200 (bucket
  CONTACT_SUPPORT): its name is from NVIDIA's earlier Xid listing for Volta and older GPUs
  (https://docs.nvidia.com/deploy/xid-errors/archive/index.html), its action the device plugin's rule below.
- NVIDIA's device plugin (NVIDIA/k8s-device-plugin, internal/rm/health.go) ignores 13, 31, 43, 45, 68 and 109 as
  application errors and marks the GPU unhealthy on any other XID. An XID this table lacks is read the same way: the
  GPU is not to be trusted until it is reset. (The catalogue now gives 109 a GPU reset, and 45 no action of the app's.)
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
NO_ACTION = "none"


@dataclass(frozen=True)
class Xid:
    name: str  # the catalogue's Description
    action: str  # NVIDIA's immediate action: RESTART_APP, NO_ACTION, or what the GPU needs (RESET_GPU, REBOOT_NODE)

    @property
    def application(self) -> bool:
        """The app's own fault: restarting the app is the whole cure, the GPU is fine."""
        return self.action == RESTART_APP


XIDS: dict[int, Xid] = {
    # Restart the app.
    13: Xid("Graphics Engine Exception", RESTART_APP),  # ROBUST_CHANNEL_GR_EXCEPTION: RESTART_APP
    31: Xid("GPU memory page fault", RESTART_APP),  # ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT: RESTART_APP
    43: Xid("GPU stopped processing", RESTART_APP),  # ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR: IGNORE (see above)
    68: Xid("NVDEC0 Exception", RESTART_APP),  # ROBUST_CHANNEL_NVDEC0_ERROR: RESTART_APP
    94: Xid("Contained memory error", RESTART_APP),  # ROBUST_CHANNEL_CONTAINED_ERROR: RESTART_APP
    # No action: the GPU stays in service and so does the app.
    # ROBUST_CHANNEL_PREEMPTIVE_REMOVAL: WORKFLOW_XID_45. Logged when an app is aborted (Ctrl-C, SIGKILL, a GPU reset):
    # acting on it would restart the app that replaced the one just stopped.
    45: Xid("Preemptive cleanup, due to previous errors", NO_ACTION),
    63: Xid("GPU memory remapping event", NO_ACTION),  # INFOROM_DRAM_RETIREMENT_EVENT: IGNORE
    92: Xid("High single-bit ECC error rate", NO_ACTION),  # EXCESSIVE_SBE_INTERRUPTS: IGNORE
    # The GPU needs a reset.
    48: Xid("Double Bit ECC Error", RESET_GPU),  # ROBUST_CHANNEL_GPU_ECC_DBE: WORKFLOW_XID_48
    61: Xid("Internal micro-controller breakpoint/warning", RESET_GPU),  # PMU_BREAKPOINT: not confirmed (see above)
    62: Xid("Internal micro-controller halt", RESET_GPU),  # PMU_HALT_ERROR: RESET_GPU
    64: Xid("GPU memory remapping failure", RESET_GPU),  # INFOROM_DRAM_RETIREMENT_FAILURE: RESET_GPU
    74: Xid("NVLINK Error", RESET_GPU),  # NVLINK_ERROR: WORKFLOW_NVLINK_ERR
    95: Xid("Uncontained memory error", RESET_GPU),  # ROBUST_CHANNEL_UNCONTAINED_ERROR: RESET_GPU
    109: Xid("Context Switch Timeout Error", RESET_GPU),  # ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR: RESET_GPU
    119: Xid("GSP RPC Timeout", RESET_GPU),  # GSP_RPC_TIMEOUT: RESET_GPU
    120: Xid("GSP Error", RESET_GPU),  # GSP_ERROR: RESET_GPU
    # The node needs a reboot.
    79: Xid("GPU has fallen off the bus", REBOOT_NODE),  # ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS: RESTART_BM
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
