"""A unix datagram socket that tells, for each datagram, which process sent it.

The kernel attaches the sender's pid, uid and gid (SCM_CREDENTIALS, enabled by SO_PASSCRED; unix(7)) and a
sender cannot forge them unless it is privileged. The socket lives in the 0700 run dir (mode 0600), so only
the launcher's own user reaches it at all; the pid then tells whose process a record comes from.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
DATAGRAM_MAX = 16384  # bytes read of one datagram; a longer one is cut (the senders write under 8 KiB)
READ_MAX = 256  # datagrams taken per call: a flood cannot hold the loop


@dataclass(frozen=True)
class Datagram:
    pid: int
    uid: int
    data: bytes


class DatagramInbox:
    """Bound at `path` (a stale socket there is replaced), non-blocking; `receive()` drains what is queued."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # The mode is set before bind() by the umask: no moment in which the socket is anyone's.
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Datagram]:
        """What is queued now, at most READ_MAX datagrams; those without credentials are dropped. OSError only
        for a socket that is broken (never for an empty queue)."""
        found = []
        for _ in range(READ_MAX):
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(DATAGRAM_MAX, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                break
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(value) >= _UCRED.size:
                    pid, uid, _gid = _UCRED.unpack(value[: _UCRED.size])
                    found.append(Datagram(pid, uid, data))
        return found

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
