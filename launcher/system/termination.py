"""The termination message: the one-line cause of an exit that is not a clean stop, where the platform reads it.

Kubernetes shows a container's last words from its termination message file, `/dev/termination-log` unless the
pod says otherwise (`terminationMessagePath`), at most 4096 bytes (source: Kubernetes documentation, "Determine the
Reason for Pod Failure"). With `terminationMessagePolicy: FallbackToLogsOnError` it falls back to the log's tail
only when the file is empty.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

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
    """Write the cause line (cut at LIMIT bytes); a file that cannot be written is said in one line on stderr and
    left alone: the exit matters more than its message."""
    path = where(setting, environ)
    if path is None:
        return
    data = line.strip().encode(errors="replace")[:LIMIT]
    try:
        path.write_bytes(data + b"\n")
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"heygem-launch: {KEY}={path}: cannot write the termination message: {exc.strerror}\n".encode())
