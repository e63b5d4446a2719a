"""Signals for the service loop: Python runs a handler in the main thread between any two bytecodes, so
taking what arrived must never drop one that a handler appends meanwhile.

The earlier `signals, received[:] = set(received), []` lost a SIGHUP that landed between the copy and the
clear (CI, stop 12: `heygem-launch restart` waited for an answer that never came). CPython checks for
pending handlers after calls (`set()` here): https://docs.python.org/3/library/signal.html#execution-of-python-signal-handlers
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from types import FrameType

# Signals an operator may send by habit (USR1 "reopen logs", QUIT for a dump, ALRM): their default action
# would end the launcher at once, and under tini in a PID namespace the app with it. Logged and ignored.
STRAY = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGALRM)


def stray_line(signum: int) -> str:
    """What heygem-launch says of a stray signal (sent by habit: USR1 "reopen logs", QUIT, ...), which it ignores."""
    return (
        f"{signal.Signals(signum).name} ignored: heygem-launch stops on SIGTERM or SIGINT and restarts the "
        "app on SIGHUP (`heygem-launch restart`); its output is not a file to reopen"
    )


class SignalInbox:
    """What the handlers received, in order; the loop takes it as a set."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first: dict[int, float] = {}  # monotonic time each signal first arrived (a stop's grace runs from it)

    def install(self, signums: Iterable[int]) -> None:
        """Route `signums` here (main thread only, as `signal.signal` requires)."""
        for signum in signums:
            signal.signal(signum, self.handler)

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.first.setdefault(signum, time.monotonic())
        self.received.append(signum)

    def pending(self, *signums: int) -> int | None:
        """One of `signums` that arrived and was not taken yet (a stop asked for during a long step)."""
        return next((s for s in self.received if s in signums), None)

    def arrived(self, signum: int) -> float | None:
        return self.first.get(signum)

    def take(self) -> set[int]:
        """The signals received since the last take. Only the entries counted first are removed: one that
        arrives during the take stays for the next (its wakeup byte wakes select() again)."""
        count = len(self.received)
        taken = set(self.received[:count])
        del self.received[:count]
        return taken
