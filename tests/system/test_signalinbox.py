"""A signal handler runs between any two bytecodes of the main thread. The inbox is tested by running its
handler after each bytecode of `take()` in turn (a trace function with opcode events), the worst a real
signal can do; the naive copy-then-clear runs first to show that the injection reaches the window."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from launcher.system.signalinbox import SignalInbox


def naive_take(inbox: SignalInbox) -> set[int]:
    """What the service did until CI stop 12."""
    received = inbox.received
    signals, received[:] = set(received), []
    return signals


def lost_positions(take: Callable[[SignalInbox], set[int]], code: object) -> tuple[list[int], int]:
    """For each bytecode k of `code`, a SIGHUP arrives just before it: the positions where it was neither
    taken nor left for the next take; and how many bytecodes there were."""
    lost, k = [], 0
    while True:
        inbox = SignalInbox()
        inbox.received.append(signal.SIGTERM)
        seen = [0]

        def per_opcode(frame, event, arg, k=k, inbox=inbox, seen=seen):  # type: ignore[no-untyped-def]
            if event == "opcode":
                if seen[0] == k:
                    inbox.handler(signal.SIGHUP, frame)
                seen[0] += 1
            return per_opcode

        def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
            if frame.f_code is code:
                frame.f_trace_opcodes = True
                return per_opcode
            return None

        sys.settrace(tracer)
        try:
            taken = take(inbox)
        finally:
            sys.settrace(None)
        if k >= seen[0]:
            return lost, seen[0]
        assert signal.SIGTERM in taken
        if signal.SIGHUP not in taken and signal.SIGHUP not in inbox.received:
            lost.append(k)
        k += 1


def test_the_injection_reaches_the_window_that_lost_a_sighup() -> None:
    lost, opcodes = lost_positions(naive_take, naive_take.__code__)
    assert opcodes > 3 and lost


def test_no_signal_is_lost_whichever_bytecode_it_lands_before() -> None:
    lost, opcodes = lost_positions(SignalInbox.take, SignalInbox.take.__code__)
    assert opcodes > 3 and lost == []


def test_real_signals_arrive_in_the_inbox() -> None:
    inbox = SignalInbox()
    old = signal.getsignal(signal.SIGUSR1)
    try:
        inbox.install([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        assert inbox.take() == {signal.SIGUSR1}
        assert inbox.take() == set()
    finally:
        signal.signal(signal.SIGUSR1, old)
