"""The termination message: the one-line cause of an exit that is not a clean stop, where the platform reads it.

Kubernetes shows a container's last words from its termination message file, `/dev/termination-log` unless the
pod says otherwise (`terminationMessagePath`), at most 4096 bytes (source: Kubernetes documentation, "Determine the
Reason for Pod Failure"). With `terminationMessagePolicy: FallbackToLogsOnError` it falls back to the log's tail
only when the file is empty.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from launcher.system.special import PSEUDO, filesystem_of

DEFAULT = Path("/dev/termination-log")
KEY = "HEYGEM_TERMINATION_LOG"
LIMIT = 4096  # bytes Kubernetes keeps of the message


def where(setting: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file: the setting (else the environment's HEYGEM_TERMINATION_LOG, for an exit before the settings were
    read), else /dev/termination-log when it exists (a Kubernetes container); None: nowhere."""
    if setting is not None:
        return setting
    if environ.get(KEY):
        return Path(environ[KEY])
    return DEFAULT if DEFAULT.exists() else None


def write(line: str, setting: Path | None = None, environ: Mapping[str, str] = os.environ) -> None:
    """Write the cause line (cut at LIMIT bytes) into a regular file; anything else there (a FIFO, which would
    block the exit until a reader came, a device, a /proc file) and a file that cannot be written are said in
    one line on stderr and left alone: the exit matters more than its message. The setting refuses them too
    (config/specs.py), but this also runs for an exit before the settings were read, with the raw value."""
    path = where(setting, environ)
    if path is None:
        return
    data = line.strip().encode(errors="replace")[:LIMIT]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return _said(path, exc.strerror)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or filesystem_of(fd) in PSEUDO:
            return _said(path, "not a regular file")
        os.ftruncate(fd, 0)
        os.write(fd, data + b"\n")
    except OSError as exc:
        _said(path, exc.strerror)
    finally:
        os.close(fd)


def _said(path: Path, why: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"heygem-launch: {KEY}={path}: cannot write the termination message: {why}\n".encode())
