"""The session audit's records in the running service: each goes to the app whose process group sent it (the
kernel names the sender's pid; records from any other process are ignored), and the watch's rule makes a
session without CUDA where CUDA is required the incident at once."""

from __future__ import annotations

import os
import time

from launcher.service.appruntime import AppRuntime
from launcher.service.supervising import AppSupervision
from launcher.system import procs
from launcher.system.datagrams import Datagram, DatagramInbox
from launcher.system.rundir import RunDirError
from launcher.watch import sessions

UNPLACED_WAIT = 5.0  # seconds a record of a just-started app waits for the loop to learn that app's pid
UNPLACED_MAX = 64


class SessionIntake(AppSupervision):
    sessions_inbox: DatagramInbox | None = None
    ignored_senders = 0
    # Records from a group supervisord leads but the loop does not know yet (an app that created a session
    # before supervisord's next answer), with when they came.
    unplaced: list[tuple[Datagram, float]]

    def open_sessions(self) -> None:
        """Bound before supervisord starts the apps, so that their first session already finds it; bound
        whatever HEYGEM_SESSION_AUDIT says, so that a `restart` turning the audit on needs nothing more."""
        self.unplaced = []
        try:
            self.sessions_inbox = DatagramInbox(self.run.sessions_socket)
        except OSError as exc:
            message = f"{self.run.sessions_socket}: cannot bind the session audit's socket: {exc.strerror}"
            raise RunDirError(message) from None

    def close_sessions(self) -> None:
        if self.sessions_inbox is not None:
            self.sessions_inbox.close()
            self.sessions_inbox = None

    def sender_app(self, pid: int) -> AppRuntime | None:
        """The app whose process group holds `pid` (the wrapper leads each app's group); None for any other."""
        try:
            group = os.getpgid(pid)
        except OSError:  # gone already: its record cannot be placed
            return None
        return next((rt for rt in self.apps.values() if rt.app_pid is not None and rt.app_pid == group), None)

    def read_sessions(self) -> None:
        """Every queued record (and those waiting for their app) to its app; an incident a record makes waits
        with the app's others (`rt.incidents`), handled in the same wakeup."""
        now = time.time()
        queued = [(d, now) for d in self.sessions_inbox.receive()] if self.sessions_inbox else []
        waiting, self.unplaced = [*self.unplaced, *queued], []
        changed = False
        for datagram, came in waiting:
            rt = self.sender_app(datagram.pid)
            if rt is None:
                self.unplace(datagram, came, now)
                continue
            record = sessions.parse(datagram.data, rt.program, datagram.pid, came)
            if record is not None:
                changed = True
                rt.incidents += rt.watch.session(record)
                self.metrics.sessions(rt.watch.sessions.book.by_provider, rt.program)
        if changed:
            self.save_state()

    def unplace(self, datagram: Datagram, came: float, now: float) -> None:
        """A record no known app sent: it waits if a group supervisord started sent it, else it is ignored."""
        sender = procs.read_proc(datagram.pid)
        leader = procs.read_proc(sender.pgrp) if sender else None
        ours = leader is not None and self.proc is not None and leader.ppid == self.proc.pid
        if ours and now - came < UNPLACED_WAIT and len(self.unplaced) < UNPLACED_MAX:
            self.unplaced.append((datagram, came))
            return
        self.ignored_senders += 1
        if self.ignored_senders == 1:  # said once: a flood from elsewhere must not flood the log
            self.log(f"ignored a session record from pid {datagram.pid}: not a process of the app")
