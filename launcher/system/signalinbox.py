"""Signals for the service loop: Python runs a handler in the main thread between any two bytecodes, so
taking what arrived must never drop one that a handler appends meanwhile.

The earlier `signals, received[:] = set(received), []` lost a SIGHUP that landed between the copy and the
clear (CI, stop 12: `heygem-launch restart` waited for an answer that never came). CPython checks for
pending handlers after calls (`set()` here): https://docs.python.org/3/library/signal.html#execution-of-python-signal-handlers
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType


class SignalInbox:
    """What the handlers received, in order; the loop takes it as a set."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self, signums: Iterable[int]) -> None:
        """Route `signums` here (main thread only, as `signal.signal` requires)."""
        for signum in signums:
            signal.signal(signum, self.handler)

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)

    def take(self) -> set[int]:
        """The signals received since the last take. Only the entries counted first are removed: one that
        arrives during the take stays for the next (its wakeup byte wakes select() again)."""
        count = len(self.received)
        taken = set(self.received[:count])
        del self.received[:count]
        return taken
