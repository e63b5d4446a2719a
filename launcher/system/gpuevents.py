"""NVML's GPU fault events (XIDs, a lost GPU) for the launcher's loop, from a thread that sleeps in the driver.

The way NVIDIA's device plugin watches its GPUs (NVIDIA/k8s-device-plugin, internal/rm/health.go): an event set
(`nvmlEventSetCreate`), each GPU registered for `nvmlEventTypeXidCriticalError` (`nvmlDeviceRegisterEvents`), and
`nvmlEventSetWait_v2` in a loop; an error from the wait (NVML_ERROR_GPU_IS_LOST, `Unknown Error`) is itself news.
Here the thread waits with the longest timeout it may, so that an idle launcher is never woken by it: the driver
wakes it for an event, and it wakes the loop (the `notify` callback writes to the loop's wake pipe).
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from launcher.system import xids
from launcher.system.gpu import recovery_action

# nvmlEventSetWait_v2 takes milliseconds as an unsigned int; a timeout only re-enters the wait, so the longest one
# that any poll(2) underneath accepts: ~24.8 days between wakeups of an idle thread.
WAIT_MS = 2**31 - 1
XID_CRITICAL_ERROR = 0x8  # nvmlEventTypeXidCriticalError (nvml.h)
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_NOT_SUPPORTED = 3


@dataclass(frozen=True)
class GpuEvent:
    """One fault on one GPU (NVML's index and UUID): an XID, or the NVML error the wait failed with for it."""

    index: int
    uuid: str
    at: float  # seconds since the epoch, when the launcher got it
    xid: int | None = None
    error: int | None = None
    recovery: int | None = None  # with XID 154: NVML's recovery action, read when it came (None: not readable)


@dataclass(frozen=True)
class _Watched:
    index: int
    uuid: str
    handle: Any
    address: int | None  # the handle as a number: the event names its device by the same pointer


class GpuWatch:
    """Started once by the service; `take()` hands over what the thread found (it calls `notify` for each)."""

    def __init__(self, notify: Callable[[], None], wait_ms: int = WAIT_MS) -> None:
        self.notify, self.wait_ms = notify, wait_ms
        self.found: queue.SimpleQueue[GpuEvent | str] = queue.SimpleQueue()
        self.watched: list[_Watched] = []
        self.notes: list[str] = []  # GPUs the watch cannot cover, and why
        self.thread: threading.Thread | None = None
        self._nvml: Any = None
        self._set: Any = None

    def start(self) -> str | None:
        """Register the GPUs and start the thread; None when it runs, else why there is no watch (no driver, NVML
        failed, no GPU supports events)."""
        from launcher.system.gpu import NVML_LIBRARY, nvml_loads

        if not nvml_loads():  # pynvml could only say so, and would stay in memory (~3 MB) for the whole run
            return f"no NVIDIA driver: {NVML_LIBRARY} not found"
        try:
            import pynvml
        except ImportError:
            return "nvidia-ml-py is not installed"
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return f"NVML failed to start: {exc}"
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
                self.watched.append(
                    _Watched(index, uuid.decode() if isinstance(uuid, bytes) else uuid, handle, _address(handle))
                )
            self._set = self._register(self.watched)
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            return f"NVML failed: {exc}"
        if not self.watched:
            pynvml.nvmlShutdown()
            return "no GPU supports NVML's XID events here" if self.notes else "NVML lists no GPU"
        self.thread = threading.Thread(target=self._run, name="gpu-events", daemon=True)
        self.thread.start()
        return None

    def _register(self, gpus: list[_Watched]) -> Any:
        """A new event set with each GPU of `gpus` that takes XID events; those that do not are noted and dropped."""
        pynvml = self._nvml
        event_set = pynvml.nvmlEventSetCreate()
        for gpu in list(gpus):
            try:
                pynvml.nvmlDeviceRegisterEvents(gpu.handle, XID_CRITICAL_ERROR, event_set)
            except pynvml.NVMLError as exc:
                self.notes.append(f"GPU {gpu.index} ({gpu.uuid}): no XID events ({exc})")
                gpus.remove(gpu)
        return event_set

    def take(self) -> list[GpuEvent | str]:
        """What the thread found since the last call: events, and a line when the watch ended on its own."""
        taken: list[GpuEvent | str] = []
        while True:
            try:
                taken.append(self.found.get_nowait())
            except queue.Empty:
                return taken

    def _put(self, item: GpuEvent | str) -> None:
        self.found.put(item)
        self.notify()

    def _run(self) -> None:
        pynvml = self._nvml
        while self.watched:
            try:
                data = pynvml.nvmlEventSetWait_v2(self._set, self.wait_ms)
            except pynvml.NVMLError as exc:
                if exc.value == NVML_ERROR_TIMEOUT:
                    continue
                if not self._failed(exc.value):
                    self._put(f"the GPU watch ends: nvmlEventSetWait_v2 failed: {exc}")
                    return
                continue
            if data.eventType & XID_CRITICAL_ERROR:
                gpu = self._gpu(data.device)
                if gpu is not None:
                    self._put(self._xid_event(gpu, int(data.eventData)))

    def _xid_event(self, gpu: _Watched, number: int) -> GpuEvent:
        # 154 names no fault of its own but the recovery the driver now asks for, which NVML holds as a field: read
        # at once, while it is the one 154 announced.
        recovery = recovery_action(self._nvml, gpu.handle) if number == xids.RECOVERY_ACTION_CHANGED else None
        return GpuEvent(gpu.index, gpu.uuid, time.time(), xid=number, recovery=recovery)

    def _failed(self, error: int) -> bool:
        """The wait failed with `error`: the GPUs it concerns (those whose own queries now fail, else all) are
        reported and no longer watched. False when the error says nothing about a GPU."""
        pynvml = self._nvml
        if xids.lost(error) is None:
            return False
        faulted = [g for g in self.watched if self._gone(g)] or list(self.watched)
        self.watched = [g for g in self.watched if g not in faulted]
        # An event set that holds a lost GPU may fail every wait: the others get a set of their own, made before
        # the loop hears of the fault, so that what it does next is watched.
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlEventSetFree(self._set)
        if self.watched:
            self._set = self._register(self.watched)
        for gpu in faulted:
            self._put(GpuEvent(gpu.index, gpu.uuid, time.time(), error=error))
        return True

    def _gone(self, gpu: _Watched) -> bool:
        try:
            self._nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
        except self._nvml.NVMLError as exc:
            return xids.lost(exc.value) is not None
        return False

    def _gpu(self, device: Any) -> _Watched | None:
        address = _address(device)
        return next((g for g in self.watched if g.address == address), None)


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value
