"""Follow a growing file like `tail -F`: a file that does not exist yet, rotation, truncation, a rewrite in
place, partial lines, and lines of any length in bounded memory.

Polled by the caller when inotify says the folder changed: one `stat` and a few `pread`s a call. Lines are
bytes; decoding (and bad bytes) is the reader's business. A call reads at most `budget` bytes and sets
`more` when the file holds more, so a flood of output never holds the service's loop (or its memory).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

BUDGET = 256 * 1024  # bytes read a call
TAIL = 64  # bytes before the offset remembered to see a file rewritten in place
CUT_MARK = b" [...line cut]"


class Follower:
    def __init__(self, path: Path, *, from_end: bool = False, line_max: int = 64 * 1024) -> None:
        """`from_end`: what the file holds now belongs to an earlier run; only what is written after this
        call is read. The file is opened here, so nothing written between now and the first read is lost."""
        self.path = path
        self.more = False
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._tail = b""
        self._lines = LineCutter(line_max)
        self._open(from_end)

    @property
    def line_max(self) -> int:
        return self._lines.line_max

    @line_max.setter
    def line_max(self, value: int) -> None:  # a restart's new HEYGEM_LINE_MAX applies to the next line
        self._lines.line_max = value

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, from_end: bool = False) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            os.close(fd)
            return False
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        self._offset = st.st_size if from_end else 0
        self._tail = os.pread(fd, min(TAIL, self._offset), self._offset - min(TAIL, self._offset))
        return True

    def _rewritten(self, size: int) -> bool:
        """Truncated (`: > file`, copytruncate), or rewritten in place with at least as many bytes."""
        assert self._fd is not None
        if size < self._offset:
            return True
        return bool(self._tail) and os.pread(self._fd, len(self._tail), self._offset - len(self._tail)) != self._tail

    def _read(self, budget: int) -> bytes:
        assert self._fd is not None
        data = os.pread(self._fd, budget, self._offset)
        self._offset += len(data)
        if data:
            self._tail = (self._tail + data)[-TAIL:]
        return data

    def read(self, budget: int = BUDGET) -> list[bytes]:
        """Complete lines (without b"\\n") written since the last call, at most `budget` bytes of them; none
        while the file cannot be read (EIO on a mount that failed): the service goes on, the file may return."""
        try:
            return self._read_lines(budget)
        except OSError:
            self.more = False
            return []

    def _read_lines(self, budget: int) -> list[bytes]:
        self.more = False
        if self._fd is None and not self._open():
            return []
        assert self._fd is not None
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if self._rewritten(os.fstat(self._fd).st_size):
            self._offset, self._tail = 0, b""
            self._lines.reset()
        data = self._read(budget)
        if len(data) == budget:
            self.more = True
        elif current != self._inode:
            # Rotated (renamed away, a new file in its place): the old file is finished, go on with the new.
            self.close()
            if current is not None and self._open():
                data += self._read(budget - len(data))
                self.more = len(data) >= budget
        return self._lines.feed(data)

    def flush(self) -> list[bytes]:
        """The unfinished last line, if any (at the end of a run)."""
        return self._lines.flush()


class LineCutter:
    """Bytes in, complete lines out (without b"\\n"), in bounded memory: a line longer than `line_max` bytes
    is cut there and marked (CUT_MARK), and the rest of it dropped up to its newline. What the watchdog's rules
    see of a line, from a followed file and in a replay alike."""

    def __init__(self, line_max: int) -> None:
        self.line_max = line_max
        self._partial = b""
        self._skipping = False  # inside a line already cut: drop bytes up to its newline

    def reset(self) -> None:
        """Forget a line begun (the file was truncated or rewritten under it)."""
        self._partial, self._skipping = b"", False

    def feed(self, data: bytes) -> list[bytes]:
        """The lines `data` completes, the ones cut included."""
        if not data:
            return []
        lines: list[bytes] = []
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return []
            data, self._skipping = data[end + 1 :], False
        *complete, rest = (self._partial + data).split(b"\n")
        for line in complete:
            lines.append(line if len(line) <= self.line_max else line[: self.line_max] + CUT_MARK)
        if len(rest) > self.line_max:
            lines.append(rest[: self.line_max] + CUT_MARK)
            rest, self._skipping = b"", True
        self._partial = rest
        return lines

    def flush(self) -> list[bytes]:
        """The unfinished last line, if any."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []
