"""GPU faults while the apps run, as NVML reports them (XID events, a lost GPU, `Unknown Error`), acted on as NVIDIA's
catalogue says (`launcher/system/xids.py`): an application XID restarts the app on that GPU at once, like any other
incident; an XID the catalogue asks no action for (14, 45, 63, 92...) is logged and counted; XID 154 follows the
recovery action NVML gives with it (no action of its own where that cannot be read); anything else stops that app
with exit 71 (`GPU_FAULT`) and one line naming the GPU, the fault and NVIDIA's action, because restarting onto a
broken GPU only loops until the restart budget says "crashed" (70), which tells the operator the wrong thing. With
HEYGEM_GPUS and HEYGEM_GPU_POLICY=any only that GPU's app stops.

The watch is a thread asleep in the driver (`launcher/system/gpuevents.py`); it wakes the loop through its wake pipe,
and the loop adds what it found to the apps' incidents on every wakeup (`with_gpu_faults`: a queue read), which
`supervising.handle_incident` handles like the watchdog's: snapshot, then the cure.
"""

from __future__ import annotations

from launcher.service.appruntime import AppRuntime
from launcher.service.state import ServiceState
from launcher.system import xids
from launcher.system.gpuevents import GpuEvent, GpuWatch
from launcher.watch.watchdog import GPU_FAULT, GPU_XID, RESTART, STOP, Incident


class GpuFaults(ServiceState):
    gpu_watch: GpuWatch | None = None

    def start_gpu_watch(self) -> None:
        """Start watching NVML's events for every GPU NVML lists (which apps a fault concerns is decided when it
        comes, so a restart onto other GPUs needs no new watch); say why when there is none."""
        if not self.settings.gpu_watch:
            return
        watch = GpuWatch(self.wake)
        why = watch.start()
        if why is not None:
            self.log(f"GPU watch off: {why}")
            return
        for note in watch.notes:
            self.log(f"GPU watch: {note}")
        self.gpu_watch = watch

    def with_gpu_faults(self, found: dict[str, list[Incident]]) -> dict[str, list[Incident]]:
        """`found` (program -> the watchdog's incidents) with what the GPU watch found since the last wakeup added,
        as incidents of the apps on the faulted GPU (a queue read when nothing came)."""
        if self.gpu_watch is None:
            return found
        for event in self.gpu_watch.take():
            if isinstance(event, str):
                self.log(event)
                continue
            for rt, incident in self.gpu_incidents(event):
                found.setdefault(rt.program, []).append(incident)
        return found

    def gpu_incidents(self, event: GpuEvent) -> list[tuple[AppRuntime, Incident]]:
        """The incident per app on the event's GPU: restart for an application XID, none for an XID NVIDIA asks no
        action for (logged, counted), stop for anything else; 154 by the recovery action read with it."""
        gpu = f"GPU {event.index} ({event.uuid})"
        if event.xid is not None:
            self.metrics.gpu_xid(event.index, event.xid)
            what, action = xids.fault(event.xid, event.recovery)
            if action == xids.NO_ACTION:
                self.log(f"{gpu}: {what}; NVIDIA's action: none, the GPU stays in service and so does the app")
                return []
        else:
            assert event.error is not None
            self.metrics.gpu_lost(event.index)
            what, action = xids.lost(event.error) or (f"NVML error {event.error}", xids.RECREATE_CONTAINER)
        restart = action == xids.RESTART_APP
        apps = self.apps_on(event)
        if not apps:
            self.log(f"{gpu}: {what}; no app runs on it")
        if restart:
            line = f"{gpu}: {what}; NVIDIA's action: {action}"
            return [(rt, Incident(GPU_XID, line, event.at, RESTART)) for rt in apps]
        return [
            (
                rt,
                Incident(
                    GPU_FAULT,
                    f"GPU fault on {gpu}: {what}; NVIDIA's action: {action}; "
                    f"the {self.named(rt)}is stopped, not restarted onto it",
                    event.at,
                    STOP,
                ),
            )
            for rt in apps
        ]

    def apps_on(self, event: GpuEvent) -> list[AppRuntime]:
        """The running apps that use the event's GPU: an app pinned by HEYGEM_GPUS to it, or an app not pinned
        whose CUDA_VISIBLE_DEVICES (the launcher's own) shows it, by index or UUID; all of it when unset."""
        found = []
        for rt in self.apps.values():
            if rt.given_up:
                continue
            instance = rt.member.instance
            if instance.device is not None:
                if instance.device.uuid == event.uuid:
                    found.append(rt)
                continue
            visible = instance.cuda_visible_devices or self.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is None or any(_names(entry.strip(), event) for entry in visible.split(",")):
                found.append(rt)
        return found


def _names(entry: str, event: GpuEvent) -> bool:
    return entry == str(event.index) or (entry.startswith("GPU-") and event.uuid.startswith(entry))
