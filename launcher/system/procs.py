"""Processes as /proc shows them: groups, children, zombies. Works inside a container's PID namespace."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int


def read_proc(pid: int | str) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            line = handle.read().decode(errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    head, _, rest = line.rpartition(")")
    fields = rest.split()
    return Proc(int(head.split(" (", 1)[0]), fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def all_procs() -> Iterator[Proc]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(name)
            if proc is not None:
                yield proc


def group_members(pgrp: int) -> list[Proc]:
    return [p for p in all_procs() if p.pgrp == pgrp and p.state != "Z"]


def first_child(pid: int) -> int | None:
    children = sorted(p.pid for p in all_procs() if p.ppid == pid)
    return children[0] if children else None


def kill_group(pgrp: int) -> int:
    """SIGKILL every live process of a group; how many were there."""
    members = group_members(pgrp)
    for proc in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
    return len(members)


def kill_session(session: int) -> int:
    """SIGKILL every live process of a session but its leader (supervisord's: the apps it started)."""
    members = [p for p in all_procs() if p.session == session and p.pid != session and p.state != "Z"]
    for proc in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
    return len(members)


def reap_orphans(session: int | None) -> None:
    """As PID 1: reap zombie orphans that were re-parented to us.

    Only zombies of the app's session (supervisord's), or any when `session` is None at the very end:
    a child that subprocess is still waiting for (the probe, in its own session) must keep its status.
    """
    me = os.getpid()
    for proc in all_procs():
        if (
            proc.state == "Z"
            and proc.ppid == me
            and (session is None or proc.session == session)
            and proc.pid != session
        ):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: in the child before exec, ask for SIGTERM when the launcher dies, so supervisord never
    outlives it. libc is found here, in the parent: nothing is imported between fork and exec. ctypes is
    imported only here (~7 ms, which `--check-only` does not need)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return in_child


_GPU_LIB = re.compile(
    r"/(lib(?:cuda|cudart|cublas|cublasLt|cudnn\w*|cufft|curand|nvrtc|nvidia-ml)\.so[\w.]*"
    r"|libonnxruntime_providers_(?:cuda|shared|tensorrt)\.so[\w.]*)$"
)


@dataclass(frozen=True)
class GpuUse:
    """What a process has of CUDA: mapped libraries and open NVIDIA device files."""

    pid: int
    libraries: tuple[str, ...]
    devices: tuple[str, ...]

    @property
    def cuda_context(self) -> bool:
        """libcuda.so mapped or an NVIDIA device open: the process talks to the driver."""
        return any(lib.startswith("libcuda.so") for lib in self.libraries) or bool(self.devices)


def gpu_use(pid: int) -> GpuUse | None:
    """From /proc: works inside a container, where NVML reports host pids that match nothing here."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as handle:
            maps = handle.read().decode(errors="replace")
    except OSError:
        return None
    libraries = sorted({m.group(1) for line in maps.splitlines() if (m := _GPU_LIB.search(line))})
    devices = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/nvidia"):
                    devices.append(target)
    return GpuUse(pid, tuple(libraries), tuple(sorted(set(devices))))


def environ_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if b"=" in item)
    return {key: value for key, _, value in pairs}


_ORT_LIB = re.compile(r"/(libonnxruntime\.so[\w.]*|onnxruntime_pybind11_state[\w.-]*\.so)$")
_ORT_CUDA = re.compile(r"/libonnxruntime_providers_cuda\.so[\w.]*$")


@dataclass(frozen=True)
class OrtUse:
    """Whether a process has ONNX Runtime loaded, and its CUDA provider library."""

    pid: int
    onnxruntime: bool
    cuda_provider: bool

    @property
    def on_cpu(self) -> bool:
        """ONNX Runtime without its CUDA provider library runs on the CPU. The converse does not hold: the
        library also loads when CUDA then fails to initialise (ORT's own lines tell that case)."""
        return self.onnxruntime and not self.cuda_provider


def ort_use(pid: int) -> OrtUse | None:
    """From /proc/PID/maps. torch's CUDA context (libcuda.so, /dev/nvidia*) says nothing about ORT: HeyGem's
    processes hold one whatever ORT does (its issue #54: torch on the GPU while ORT failed on cuDNN)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as handle:
            maps = handle.read().decode(errors="replace")
    except OSError:
        return None
    lines = maps.splitlines()
    return OrtUse(
        pid,
        onnxruntime=any(_ORT_LIB.search(line) for line in lines),
        cuda_provider=any(_ORT_CUDA.search(line) for line in lines),
    )


def command_line(pid: int) -> str:
    """A process's command line on one line: its arguments joined by spaces, and any whitespace in them (an
    argument may hold newlines: `python -c` with a script) one space, so that a message quoting it stays one line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return " ".join(handle.read().replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        return ""


def start_time(pid: int) -> float | None:
    """When a process started, in seconds since the epoch (/proc/PID/stat field 22 and /proc/stat btime)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            ticks = int(handle.read().decode(errors="replace").rpartition(")")[2].split()[19])
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
