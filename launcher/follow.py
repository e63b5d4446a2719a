"""Follow a growing file like `tail -F`: a file that does not exist yet, rotation, truncation, partial lines.

Polled, not inotify: one `stat` and one `read` per tick cost microseconds, and the launcher wakes
every quarter second anyway. Lines are bytes; decoding (and bad bytes) is the reader's business.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_PARTIAL = 1 << 20  # a "line" longer than this is passed on in pieces rather than held forever


class Follower:
    def __init__(self, path: Path, *, from_end: bool = False) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._from_end = from_end

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(fd)
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        # Only the first open may skip what is there already; a rotated-in file is read from its start.
        self._offset = st.st_size if self._from_end else 0
        self._from_end = False
        return True

    def _read_all(self) -> bytes:
        assert self._fd is not None
        chunks = []
        while True:
            chunk = os.pread(self._fd, 1 << 16, self._offset)
            if not chunk:
                return b"".join(chunks)
            self._offset += len(chunk)
            chunks.append(chunk)

    def read(self) -> list[bytes]:
        """Complete lines (without b"\\n") written since the last call."""
        if self._fd is None and not self._open():
            return []
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if os.fstat(self._fd).st_size < self._offset:  # type: ignore[arg-type]
            self._offset = 0  # truncated in place (copytruncate, `: > file`)
            self._partial = b""
        data = self._read_all()
        if current != self._inode:
            # Rotated (renamed away, a new file in its place): finish the old file, then start on the new.
            self.close()
            if current is not None and self._open():
                data += self._read_all()
        return self._split(data)

    def _split(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        *lines, rest = (self._partial + data).split(b"\n")
        if len(rest) > MAX_PARTIAL:
            lines.append(rest)
            rest = b""
        self._partial = rest
        return lines

    def flush(self) -> list[bytes]:
        """The unfinished last line, if any (at the end of a run)."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []
