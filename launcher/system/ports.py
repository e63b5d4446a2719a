"""Who listens on a TCP port, from /proc/net/tcp{,6} and /proc/PID/fd: no tool, works in a container.

Gradio, given a busy GRADIO_SERVER_PORT, silently takes the next free one (up to 7959; FIELD.md section 2):
every probe would then ask the wrong port. So the launcher refuses to start on a busy port.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from launcher import exitcodes
from launcher.errors import LaunchError
from launcher.system.procs import command_line

LISTEN = "0A"  # TCP_LISTEN in the kernel's hex state column


@dataclass(frozen=True)
class Holder:
    pid: int | None  # None when /proc does not show whose socket it is (another user's, another namespace)
    command: str

    def describe(self) -> str:
        if not self.pid:
            return "a process this user cannot see"
        # One line: a command line may hold newlines (`python -c` with a script).
        return f"pid {self.pid} ({' '.join(self.command.split())[:80]})"


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port`, on any address, IPv4 or IPv6."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holders(port: int) -> list[Holder]:
    """Who listens on `port`; empty when nothing does."""
    inodes = listening_inodes(port)
    if not inodes:
        return []
    found: list[Holder] = []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/fd/{fd}") in wanted:
                        found.append(Holder(int(name), command_line(int(name))))
                        break
    return found or [Holder(None, "")]


def held_by(port: int) -> str | None:
    """Who listens on `port`, in words; None when nothing does."""
    busy = holders(port)
    return ", ".join(h.describe() for h in busy) if busy else None


def check_free(port: int) -> None:
    """Raises LaunchError (exit 78) naming the port and its holders when something listens on it."""
    holder = held_by(port)
    if holder:
        raise LaunchError(
            f"port {port} (HEYGEM_APP_PORT / GRADIO_SERVER_PORT) is already in use by "
            f"{holder}: Gradio would silently take another port and every "
            "probe would watch the wrong one; stop that process or choose another port",
            exit_code=exitcodes.CONFIG,
        )


def check_metrics_free(port: int) -> None:
    """Raises LaunchError (exit 78) naming HEYGEM_METRICS_PORT and the holders when something listens on it."""
    holder = held_by(port)
    if holder:
        raise LaunchError(
            f"HEYGEM_METRICS_PORT={port}: already in use by {holder}; stop that process, choose another port, "
            "or leave it empty (no metrics)",
            exit_code=exitcodes.CONFIG,
        )
