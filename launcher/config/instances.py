"""Pure: which apps to run, one per GPU (`HEYGEM_GPUS`), and what each gets: its supervisord program, its
`CUDA_VISIBLE_DEVICES`, its port.

HeyGem's queues and workers live in one process (FIELD.md section 2), so a second GPU needs a second app,
pinned to it with CUDA_VISIBLE_DEVICES; each app then sees its GPU as device 0, which is what HeyGem's code
asks for (`cuda:0`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from launcher.errors import ConfigError

TYPE_CHECKING = False  # the GPU inventory is read after the probe has started (preflight/check.py)
if TYPE_CHECKING:
    from launcher.system import gpu

SINGLE_PROGRAM = "app"  # today's one app: its name in supervisord and in every earlier run dir
MAX_GPUS = 64
POLICIES = ("all", "any")


@dataclass(frozen=True)
class GpuSelection:
    """HEYGEM_GPUS as parsed: `all`, a count, or a list of indices / UUIDs."""

    kind: str  # "all", "count" or "list"
    count: int = 0
    entries: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return str(self.count) if self.kind == "count" else ",".join(self.entries)


def _ascii_digits(text: str) -> bool:
    # str.isdigit() takes `٢` and `²`: CUDA_VISIBLE_DEVICES takes only ASCII indices.
    return text.isascii() and text.isdigit()


def parse_gpus(raw: str) -> GpuSelection | None:
    """Pure: HEYGEM_GPUS. Empty: None (one app, not pinned). `all`; a number is a count (1-64); a
    comma-separated list, or one `GPU-`/`MIG-` UUID, names the GPUs (indices as `nvidia-smi` numbers them).
    Raises ValueError with what is wrong."""
    text = raw.strip()
    if not text:
        return None
    if text.lower() == "all":
        return GpuSelection("all")
    if _ascii_digits(text):
        count = int(text)
        if not 1 <= count <= MAX_GPUS:
            raise ValueError(f"a count must be 1-{MAX_GPUS}")
        return GpuSelection("count", count)
    entries = tuple(e.strip() for e in text.split(","))
    for entry in entries:
        if not (_ascii_digits(entry) or entry.startswith(("GPU-", "MIG-"))):
            raise ValueError(f"{entry!r} is neither a GPU index nor a GPU-/MIG- UUID (all, a count, or a list)")
    if len(set(entries)) != len(entries):
        raise ValueError("names a GPU twice")
    if len(entries) > MAX_GPUS:
        raise ValueError(f"names more than {MAX_GPUS} GPUs")
    return GpuSelection("list", len(entries), entries)


def policy_met(policy: str | None, passed: Sequence[bool]) -> bool:
    """Pure: HEYGEM_GPU_POLICY over the apps' answers (preflight, readiness, a probe): `any` needs one to
    pass; `all` (and one app, and a state file of an older launcher: None) needs every one, and at least one."""
    if policy == "any":
        return any(passed)
    return bool(passed) and all(passed)


@dataclass(frozen=True)
class Instance:
    """One app: `position` 0..n-1, its supervisord program, the CUDA_VISIBLE_DEVICES it gets (None: inherited,
    the single app of old), the GPU NVML knows it as (None without a driver), its port."""

    position: int
    program: str
    cuda_visible_devices: str | None
    device: gpu.Gpu | None
    port: int

    @property
    def gpu_label(self) -> str:
        """How people read it: `GPU 1 (GPU-8f…)`, or the CUDA_VISIBLE_DEVICES entry without a driver."""
        if self.device is not None:
            return f"GPU {self.device.index} ({self.device.uuid})"
        if self.cuda_visible_devices is not None:
            return f"GPU {self.cuda_visible_devices}"
        return "the visible GPUs"

    def as_dict(self) -> dict[str, object]:
        return {
            "program": self.program,
            "position": self.position,
            "cuda_visible_devices": self.cuda_visible_devices,
            "gpu_index": None if self.device is None else self.device.index,
            "gpu_uuid": None if self.device is None else self.device.uuid,
            "port": self.port,
        }


def _candidates(visible: str | None, inventory: gpu.Inventory) -> list[tuple[str, gpu.Gpu | None]] | None:
    """The GPUs this launcher may hand out, as (CUDA_VISIBLE_DEVICES entry, NVML device): those of its own
    CUDA_VISIBLE_DEVICES when set, else every GPU NVML lists; None when nothing can say (no driver)."""
    if visible is not None:
        from launcher.system.gpu import visibility

        seen = visibility(visible, inventory)
        if seen.devices is None:
            return [(entry, None) for entry in seen.entries]
        devices = list(seen.devices)
        out: list[tuple[str, gpu.Gpu | None]] = []
        for entry in seen.entries:
            if entry == seen.unmatched:
                break  # CUDA ignores it and every entry after it
            out.append((entry, None) if entry in seen.unverified else (entry, devices.pop(0)))
        return out
    if inventory.available:
        return [(str(g.index), g) for g in inventory.gpus]
    return None


def plan(
    selection: GpuSelection | None, visible: str | None, inventory: gpu.Inventory, base_port: int
) -> tuple[Instance, ...]:
    """Pure: the apps to run. `visible`: the launcher's own CUDA_VISIBLE_DEVICES (a selection is drawn from
    it); `base_port`: the first app's port, the others count up. Raises ConfigError naming HEYGEM_GPUS when
    the selection asks for GPUs that are not there, or a port past 65535."""
    if selection is None:
        return (Instance(0, SINGLE_PROGRAM, None, None, base_port),)
    candidates = _candidates(visible, inventory)
    where = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "NVML"
    chosen: list[tuple[str, gpu.Gpu | None]]
    if selection.kind == "all":
        if not candidates:
            why = inventory.reason if candidates is None else f"{where} leaves none visible"
            raise ConfigError(f"HEYGEM_GPUS=all: no GPU to count ({why}); give a count or a list")
        chosen = candidates
    elif selection.kind == "count":
        if candidates is None:  # no driver: the preflight will say so; the apps are still planned
            chosen = [(str(i), None) for i in range(selection.count)]
        elif selection.count > len(candidates):
            raise ConfigError(f"HEYGEM_GPUS={selection.count}: only {len(candidates)} GPU(s) visible ({where})")
        else:
            chosen = candidates[: selection.count]
    else:
        chosen = [_pick(entry, candidates, visible, inventory) for entry in selection.entries]
        devices = [d for _, d in chosen if d is not None]
        if len({d.index for d in devices}) != len(devices):
            raise ConfigError(f"HEYGEM_GPUS={selection}: names the same GPU twice")
    last = base_port + len(chosen) - 1
    if last > 65535:
        raise ConfigError(f"HEYGEM_GPUS={selection}: the apps' ports {base_port}-{last} go past 65535")
    return tuple(
        Instance(i, f"{SINGLE_PROGRAM}-{i}", entry, device, base_port + i) for i, (entry, device) in enumerate(chosen)
    )


def _pick(
    entry: str, candidates: list[tuple[str, gpu.Gpu | None]] | None, visible: str | None, inventory: gpu.Inventory
) -> tuple[str, gpu.Gpu | None]:
    """One listed GPU: it must exist (with a driver) and be among the launcher's visible ones (when set)."""
    device = None
    if inventory.available and not entry.startswith("MIG-"):
        from launcher.system.gpu import visibility

        device = visibility(entry, inventory).devices
        if not device:
            known = ", ".join(f"{g.index} ({g.uuid})" for g in inventory.gpus) or "none"
            raise ConfigError(f"HEYGEM_GPUS: {entry!r} matches no GPU (NVML lists: {known})")
    found = device[0] if device else None
    if visible is not None and candidates is not None:
        allowed = [c for c in candidates if c[0] == entry or (found is not None and c[1] == found)]
        if not allowed:
            raise ConfigError(f"HEYGEM_GPUS: {entry!r} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    return entry, found
