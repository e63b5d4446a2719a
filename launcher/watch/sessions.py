"""Pure: what the session audit reports (preflight/audit/sitecustomize.py), one record per ONNX Runtime session
the app's Python processes create, and the rule that reads it.

A session's providers are `InferenceSession.get_providers()`, ONNX Runtime's own word: after a CUDA provider
that did not load it is `['CPUExecutionProvider']` (FIELD.md section 3), whatever the process maps and however
its log lines are written. That is proof, where `/proc/PID/maps` (the provider library also maps when CUDA
then fails to initialise) and ORT's lines (log levels, buffering, the app's log dialect) are signs.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from launcher.watch.watchdog import CPU_FALLBACK, Incident

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime logs its fallback while the session is being created, a few milliseconds before the audit's
# record of that session: the line waits this long (seconds) for the record, the better evidence.
SESSION_WAIT = 0.5
KEPT = 100  # sessions remembered per app process generation: HeyGem creates a handful; a loop must not grow us
FIELD_MAX = 500  # characters of a model path or an error line kept


@dataclass(frozen=True)
class Session:
    app: str  # the supervisord program
    pid: int  # from the kernel (SCM_CREDENTIALS), never from the record's text
    model: str
    requested: tuple[str, ...] | None  # None: the app named no providers (ORT's default order)
    providers: tuple[str, ...]  # empty when creation raised
    error: str | None  # the exception's first line, when creation raised
    at: float  # seconds since the epoch, when the launcher received it

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "pid": self.pid,
            "model": self.model,
            "requested": None if self.requested is None else list(self.requested),
            "providers": list(self.providers),
            "error": self.error,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        """A session as `as_dict` wrote it (the state file, `status --json`)."""
        requested, providers = data.get("requested"), data.get("providers")
        return cls(
            str(data.get("app")),
            int(data.get("pid") or 0),
            str(data.get("model")),
            None if requested is None else tuple(requested),
            tuple(providers or ()),
            data.get("error"),
            float(data.get("at") or 0),
        )

    @property
    def provider(self) -> str:
        """The provider the session runs on first, or `none` when its creation raised."""
        return self.providers[0] if self.providers else "none"


def _names(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(str(v)[:100] for v in value[:16])


def parse(data: bytes, app: str, pid: int, at: float) -> Session | None:
    """One datagram of the audit as a Session; None when it is not one (never raises)."""
    try:
        record = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        return None
    error = record.get("error")
    return Session(
        app,
        pid,
        record["model"][:FIELD_MAX],
        _names(record.get("requested")),
        _names(record.get("providers")) or (),
        str(error)[:FIELD_MAX] if error is not None else None,
        at,
    )


def cpu_fallback(session: Session, required: str) -> str | None:
    """The evidence line when this session is ONNX Runtime's own word that the app runs on the CPU where
    `required` is CUDA: it asked for CUDA (or for nothing in particular) and did not get it. A session the app
    asked for on the CPU alone is its choice; one whose creation raised counts when the error names CUDA
    (onnxruntime-gpu up to 1.18 raises "CUDA_PATH is set but CUDA wasn't able to be loaded")."""
    if required != CUDA or CUDA in session.providers:
        return None
    if session.requested is not None and CUDA not in session.requested:
        return None
    asked = list(session.requested) if session.requested is not None else "ONNX Runtime's default providers"
    where = f"pid {session.pid}, model {session.model}"
    if session.error is not None:
        if "CUDA" not in session.error:
            return None
        return f"ONNX Runtime could not create a session on CUDA ({where}; asked for {asked}): {session.error}"
    return f"ONNX Runtime gave the session {list(session.providers)}, not {CUDA} ({where}; asked for {asked})"


class SessionBook:
    """The sessions of one app process generation: the last KEPT, and a count per provider for the metrics."""

    def __init__(self) -> None:
        self.recent: deque[Session] = deque(maxlen=KEPT)
        self.by_provider: Counter[str] = Counter()

    def add(self, session: Session) -> None:
        self.recent.append(session)
        self.by_provider[session.provider] += 1

    def clear(self) -> None:
        """A new app process: its predecessor's sessions are gone with it."""
        self.recent.clear()
        self.by_provider.clear()

    def as_list(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.recent]


class SessionEvidence:
    """The audit's part of one app's watch: its sessions, and ORT's fallback line held for up to SESSION_WAIT
    so that the one incident names the model and the process (the best evidence wins, not the first)."""

    def __init__(self) -> None:
        self.book = SessionBook()
        self.held: tuple[Incident, float] | None = None

    def hold(self, found: list[Incident], now: float) -> list[Incident]:
        """`found` without its CPU-fallback incident, which waits for a session record."""
        for it in found:
            if it.kind == CPU_FALLBACK:
                self.held = (it, now + SESSION_WAIT)
        return [it for it in found if it.kind != CPU_FALLBACK]

    def add(
        self, record: Session, evidence: str | None, fire: Callable[[str, float], list[Incident]]
    ) -> list[Incident]:
        """Keep the session; with `evidence` (its fallback), the incident at once, taking up a held line of
        ORT's; `fire` is the watchdog's once-per-process rule."""
        self.book.add(record)
        if evidence is None:
            return []
        if self.held is not None:
            line, self.held = self.held[0], None
            return [Incident(CPU_FALLBACK, f"{evidence}; ONNX Runtime said: {line.line}", record.at, line.action)]
        return fire(evidence, record.at)

    def release(self, now: float) -> list[Incident]:
        """A held line whose record never came (a process the audit cannot reach): the incident as it is."""
        if self.held is None or now < self.held[1]:
            return []
        released, self.held = self.held[0], None
        return [released]

    @property
    def deadline(self) -> float | None:
        return self.held[1] if self.held else None

    def clear(self) -> None:
        self.book.clear()
        self.held = None
