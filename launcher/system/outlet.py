"""Output to the container that never holds the service's loop: a bounded queue drained by a writer thread.

The loop copies the app's output to stdout and writes its own lines to stderr. A reader that stops (Docker's
blocking log mode with a remote driver that is down, a terminal paused with Ctrl-S, `| less`) would block a
plain write(), and with it the watchdog, the probes' state and SIGTERM. Here a write only queues; when the
queue holds `limit` bytes, what comes is dropped and counted, and said once the reader is back. A reader
that goes away (`| grep -m1 ready`, a log shipper that died) or an fd closed at start ends the writing,
never the service.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable

LIMIT = 2**20  # bytes queued before lines are dropped: ~7,000 lines, minutes of HeyGem's usual rate


class Outlet:
    def __init__(self, fd: int, *, limit: int = LIMIT, name: str = "stdout") -> None:
        self.fd, self.limit, self.name = fd, limit, name
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.writing = False  # the thread holds a chunk taken off the queue
        self.gone = not _usable(fd)
        self.dropped = 0  # lines dropped since the reader stalled, not yet reported
        self.dropped_total = 0
        self.on_drop: Callable[[int, bool], None] | None = None  # (lines, resumed): said elsewhere
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def write(self, data: bytes, lines: int = 1) -> bool:
        """Queue `data` (`lines` lines of it); never blocks. False when it was dropped."""
        if self.gone or not data:
            return not data
        with self._cond:
            if self.queued + len(data) > self.limit:
                first = self.dropped == 0
                self.dropped += lines
                self.dropped_total += lines
                report = self.on_drop if first else None
            else:
                self.queue.append(data)
                self.queued += len(data)
                self._cond.notify()
                report = None
        if report is not None:
            report(lines, False)
        self._start()
        return report is None and self.dropped == 0

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"outlet-{self.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.queue:
                    self._cond.wait()
                chunk = b"".join(self.queue)
                self.queue.clear()
                self.writing = True
            try:
                _write_all(self.fd, chunk)
            except OSError as exc:
                # EPIPE: the reader left; EBADF: closed under us; EIO: a terminal hung up. Nothing more is said.
                with self._cond:
                    self.gone, self.queued, self.writing = True, 0, False
                    self.queue.clear()
                    self._cond.notify_all()
                if exc.errno not in (errno.EPIPE, errno.EBADF, errno.EIO, errno.ECONNRESET):
                    raise
                return
            with self._cond:
                self.queued -= len(chunk)
                self.writing = False
                resumed, self.dropped = self.dropped, 0
                self._cond.notify_all()
            if resumed and self.on_drop is not None:
                self.on_drop(resumed, True)

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for what is queued to be written (at the end of a run); True when it was."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while (self.queue or self.writing) and not self.gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def _usable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def hold_std_fds() -> None:
    """/dev/null on 0, 1 and 2 where they are closed at start (`heygem-launch >&-`): the next file we open
    would otherwise become our stdout, and the app's output would be written into it."""
    for fd in (0, 1, 2):
        if not _usable(fd):
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd, inheritable=True)
                os.close(null)
