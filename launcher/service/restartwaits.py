"""Starting an app again after a crash or an incident, once its backoff has passed (`exitpolicy.Backoff`).

supervisord does not restart the app itself (`autorestart=false`, supervisor_config.py): its own backoff only
spaces quick failures and forgets them at odd times (Supervisor/supervisor#487). The wait is a deadline the loop
checks at each wakeup, never a sleep: a SIGTERM during it stops at once.
"""

from __future__ import annotations

import contextlib
import time
import xmlrpc.client

from launcher.service.appruntime import AppRuntime
from launcher.service.state import ServiceState

STOPPED = ("STOPPED", "EXITED", "FATAL")


class RestartWaits(ServiceState):
    def begin_wait(self, rt: AppRuntime, *, stopped: bool) -> float:
        """A restart is due: the app is stopped now (`stopped`) or asked to stop at the next step; it starts once
        stopped and its wait has passed. The wait's length, in seconds."""
        delay = rt.backoff.wait(time.monotonic())
        rt.pending_start, rt.stop_sent = True, stopped
        self.metrics.backoff(delay, rt.program)
        return delay

    def advance_restart(self, rt: AppRuntime) -> None:
        """One step: stop asked for (once), then the start once supervisord calls the app stopped and the wait
        has passed. A stop asked for meanwhile stops; it never waits for the wait."""
        if not rt.stop_sent:
            with contextlib.suppress(xmlrpc.client.Fault):  # already stopped
                self.supervisor.call("stopProcess", rt.program, False)
            rt.stop_sent = True
        if rt.backoff.left(time.monotonic()) > 0:
            return
        if self.supervisor.call("getProcessInfo", rt.program)["statename"] in STOPPED:
            with contextlib.suppress(xmlrpc.client.Fault):  # started meanwhile
                self.supervisor.call("startProcess", rt.program, False)
            rt.pending_start = rt.stop_sent = False
            self.metrics.backoff(0.0, rt.program)

    def restart_due_in(self) -> float | None:
        """Seconds until the next waiting app may start (for select()), or None when none waits."""
        now = time.monotonic()
        waits = [rt.backoff.left(now) for rt in self.apps.values() if rt.pending_start and not rt.given_up]
        return min(waits) if waits else None
