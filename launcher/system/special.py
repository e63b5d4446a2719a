"""Files that stat() calls regular but that cannot be read like one: /proc and /sys files (/proc/self/mem
answers EIO, /proc/kmsg consumes the kernel's log as it is read), and files on a mount that fails reads.
Settings that name a file to read refuse them (exit 78) before anything reads them for real."""

from __future__ import annotations

import os

# Kernel filesystems whose "regular" files are interfaces, not data.
PSEUDO = frozenset(
    {"proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs", "cgroup", "cgroup2", "bpf", "pstore",
     "efivarfs", "binfmt_misc", "fusectl", "mqueue", "devpts", "selinuxfs", "rpc_pipefs", "nsfs"}
)  # fmt: skip


def filesystem_of(fd: int) -> str | None:
    """The filesystem type that holds the open file `fd` (from /proc/self/mountinfo), or None if unknown."""
    dev = os.fstat(fd).st_dev
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 3 and fields[2] == wanted and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return None


def unreadable(fd: int) -> str | None:
    """Why the regular file open as `fd` cannot be read like a file, or None: a kernel interface (never
    read, as a read may consume it), or a first read that fails (EIO on a broken mount)."""
    kind = filesystem_of(fd)
    if kind in PSEUDO:
        return f"a {kind} file, not a regular file"
    try:
        os.pread(fd, 1, 0)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return None
