"""Pure: what a GPU fault at run time asks for, as NVIDIA says it. The XID table is data: NVIDIA's whole catalogue.

Sources:
- `data/xid-catalogue.tsv`: every row (XIDs 1 to 172) of the "Xids" sheet of NVIDIA's Xid catalogue for Ampere and
  newer GPUs, "Analyzing Xid Errors with the Xid Catalog"
  (https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, https://docs.nvidia.com/Xid-Catalog.xlsx;
  the page shows no version or date; transcribed from a stored copy of the page): Code, Mnemonic,
  Description (`name`) and "Resolution Bucket (Immediate Action)", "the action that is immediately needed in order to
  recover the system and get it back into service". An empty bucket is one the catalogue leaves empty (162-172, the
  newest rows, some with a sentence of guidance instead, read in `OURS`). Descriptions "Unused" are, in the
  catalogue's words, a Code "deprecated or V100 or earlier".
- How a bucket becomes our action (`BUCKETS`), as the catalogue's "Fault Resolution Buckets" sheet defines each:
  RESTART_APP ("The application should be restarted; RESET_GPU or RESTART_BM is not deemed necessary") -> restart the
  app; IGNORE ("No Action required") -> none: the XID is logged and counted, the app keeps running; RESET_GPU -> reset
  the GPU; RESTART_BM ("Restart bare metal") and RESTART_VM ("VM owning the affected GPU must be restarted"; to the
  container the VM is its node) -> reboot the node. The rest is read for one XID on one GPU, and where the catalogue
  leaves a choice the stronger action is taken (the rule: the GPU is taken out of use rather than trusted).
  WORKFLOW_XID_48 ("Solo: RESET_GPU"), WORKFLOW_NVLINK_ERR (its trigger text: "A GPU reset or node reboot is needed"),
  WORKFLOW_NVLINK5_ERR (144-150: the action is decoded from registers in the kernel's message, which NVML's event
  lacks; most decode to RESET_GPU), CHECK_UVM ("If UVM/vGPU is being utilized, RESET_GPU; otherwise IGNORE"),
  CONTACT_SUPPORT (the bucket of the Unused rows, 61 among them, and of 142: an XID not expected on this GPU, read as
  one outside the catalogue, below) and an empty bucket -> reset the GPU. CHECK_MECHANICALS (54, the board's
  auxiliary power) and UPDATE_SWFW (78, a vGPU that cannot start: update driver and firmware) -> reboot the node, as
  both take the node out of service. WORKFLOW_XID_45 ("Solo: RESTART_FM", the NVSwitch fabric manager, nothing of the
  app's; "Not Solo: IGNORE (follow guidance in other Xid)") -> none. XID_154 (154) -> see below.
- Where we depart from a row's bucket, one line each (`OURS`): 43 and the power-smoothing rows 162-165.
- XID 154, "GPU Recovery Action Changed" (drivers R565 and later): "seen in conjunction with other Xids", it says the
  recovery the GPU now needs, which NVML gives as the field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
  (nvmlDeviceGpuRecoveryAction_t, nvml.h; NVIDIA's GPU memory error management guide, "Error Recovery and Response
  Flags"). The watch reads it when 154 comes (`launcher/system/gpuevents.py`), `fault` turns it into an action
  (`RECOVERY`); where it cannot be read (an older driver or nvidia-ml-py), 154 takes no action of its own: the XID it
  accompanies carries it.
- NVIDIA's device plugin (NVIDIA/k8s-device-plugin, internal/rm/health.go) marks the GPU unhealthy on any XID it does
  not list as an application's; an XID outside the catalogue is read the same way: reset the GPU.
- A lost GPU: NVML calls return NVML_ERROR_GPU_IS_LOST after XID 79 (nvml.h); NVML's `Unknown Error` in a running
  container that had its GPU is the device cgroup rewritten under it (a `systemctl daemon-reload` on the host), and
  NVIDIA's notice (NVIDIA/nvidia-container-toolkit#48) says the container must be recreated.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

RESTART_APP = "restart the app"
RESET_GPU = "reset the GPU"
REBOOT_NODE = "reboot the node"
RECREATE_CONTAINER = "recreate the container"
NO_ACTION = "none"

CATALOGUE = "xid-catalogue.tsv"  # in this package's data/
RECOVERY_ACTION_CHANGED = 154

# NVIDIA's immediate-action buckets -> our action (the module's docstring gives the reading of each).
BUCKETS: dict[str, str] = {
    "RESTART_APP": RESTART_APP,
    "IGNORE": NO_ACTION,
    "RESET_GPU": RESET_GPU,
    "RESTART_BM": REBOOT_NODE,
    "RESTART_VM": REBOOT_NODE,
    "WORKFLOW_XID_48": RESET_GPU,
    "WORKFLOW_NVLINK_ERR": RESET_GPU,
    "WORKFLOW_NVLINK5_ERR": RESET_GPU,
    "CHECK_UVM": RESET_GPU,
    "CONTACT_SUPPORT": RESET_GPU,
    "": RESET_GPU,
    "CHECK_MECHANICALS": REBOOT_NODE,
    "UPDATE_SWFW": REBOOT_NODE,
    "WORKFLOW_XID_45": NO_ACTION,
    "XID_154": NO_ACTION,  # what NVML's recovery action says instead, where it can be read (`fault`)
}

# Rows where heygem-launch departs from the catalogue's bucket: XID -> (our action, why).
_POWER_SMOOTHING = "power smoothing hardware only, the GPU's work goes on; no reset (163: 'No GPU reset required')"
OURS: dict[int, tuple[str, str]] = {
    43: (RESTART_APP, "bucket IGNORE, but its trigger text says the app 'must terminate' (the device plugin's too)"),
    162: (NO_ACTION, _POWER_SMOOTHING),
    163: (NO_ACTION, _POWER_SMOOTHING),
    164: (NO_ACTION, _POWER_SMOOTHING),
    165: (NO_ACTION, _POWER_SMOOTHING),
}

# NVML's recovery action (nvmlDeviceGpuRecoveryAction_t) -> (the driver's words, our action).
RECOVERY: dict[int, tuple[str, str]] = {
    0: ("None", NO_ACTION),
    1: ("GPU Reset Required", RESET_GPU),
    2: ("Node Reboot Required", REBOOT_NODE),
    # "Terminate all GPU processes that conduct peer-to-peer traffic", then the driver names the next action (a
    # further 154): the app is the process ours to terminate.
    3: ("Drain P2P", RESTART_APP),
    4: ("Drain and Reset", RESET_GPU),
    5: ("Recover IMEX Domain", NO_ACTION),  # the multi-node NVLink domain's, not this GPU's (nor the app's)
    6: ("Bus Reset", RESET_GPU),
    7: ("System Reboot", REBOOT_NODE),
}


@dataclass(frozen=True)
class Xid:
    name: str  # the catalogue's Description (its Mnemonic where the Description is "Unused")
    action: str  # RESTART_APP, NO_ACTION, or what the GPU needs (RESET_GPU, REBOOT_NODE)
    bucket: str = ""  # the catalogue's immediate-action bucket, as given

    @property
    def application(self) -> bool:
        """The app's own fault: restarting the app is the whole cure, the GPU is fine."""
        return self.action == RESTART_APP


@functools.cache
def catalogue() -> dict[int, Xid]:
    """The catalogue's rows with our action for each, read once from the package's data file."""
    text = (resources.files("launcher.system") / "data" / CATALOGUE).read_text(encoding="utf-8")
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    table: dict[int, Xid] = {}
    for row in rows:
        number, bucket = int(row["xid"]), row["bucket"]
        name = row["name"] if row["name"] != "Unused" else f"{row['mnemonic']}, Unused in the catalogue"
        action = BUCKETS[bucket]  # a bucket this module cannot read fails the data file's test, not a fault's
        table[number] = Xid(name, OURS[number][0] if number in OURS else action, bucket)
    return table


def xid(number: int) -> Xid:
    """The catalogue's entry for XID `number`; one not in it is taken as the device plugin takes it: reset the GPU."""
    return catalogue().get(
        number, Xid("not in NVIDIA's catalogue: NVIDIA's device plugin marks the GPU unhealthy", RESET_GPU)
    )


def fault(number: int, recovery: int | None = None) -> tuple[str, str]:
    """(what, our action) for XID `number`; for 154, `recovery` is NVML's recovery action read with it (None: not
    read, and 154 then asks nothing of its own)."""
    entry = xid(number)
    what = f"XID {number} ({entry.name})"
    if number != RECOVERY_ACTION_CHANGED:
        return what, entry.action
    if recovery is None:
        return f"{what}; NVML's recovery action could not be read: the XID it accompanies carries the action", NO_ACTION
    words, action = RECOVERY.get(recovery, ("unknown", RESET_GPU))
    return f"{what}: NVML's recovery action is {recovery} ({words})", action


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


def lost(error: int) -> tuple[str, str] | None:
    """What an NVML error from the event wait means: (what, NVIDIA's action) for a lost GPU, None for another error
    (which says nothing about the GPU)."""
    return LOST.get(error)
