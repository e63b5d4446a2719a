"""The stop: every app's group within the grace (together, not one grace after another), then supervisord;
nothing of the apps is left behind, whatever asked for the stop, and within the grace from the signal even
when supervisord does not answer (stopped, stuck on a hung write) or its socket went with the run dir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import xmlrpc.client

from launcher import exitcodes
from launcher.errors import LaunchError
from launcher.preflight import probe
from launcher.service.control import CALL_ERRORS, UNANSWERED
from launcher.service.state import ServiceState, StopRequested
from launcher.system import procs, termination
from launcher.system.rundir import (
    RunDirError,
    remove,
)

STOP_MARGIN = 2.0  # beyond the stop grace, for a replacement: supervisord's SIGKILL and the reaping
EXIT_SLACK = 0.5  # beyond the grace, for a stop: supervisord's own exit once its apps are gone
FLUSH_SECONDS = 0.3  # the output's end is worth less than a stop within the grace
ALIVE = ("STOPPING", "RUNNING", "STARTING", "BACKOFF")


STOP_CALL_SECONDS = 1.0  # a call during a stop: supervisord answers in milliseconds; past this, it is stuck


def _left(deadline: float) -> float:
    return max(0.1, min(STOP_CALL_SECONDS, deadline - time.monotonic()))


class Stopping(ServiceState):
    # -- stop -----------------------------------------------------------------------------------------
    def stop_apps(self, programs: list[str], deadline: float | None = None, *, final: bool = False) -> None:
        """Stop the apps together, each SIGTERM then SIGKILL at the grace, and wait for all (at most until
        `deadline`): supervisord stops its groups one after the other (shutdown and stopProcessGroup alike),
        one grace each, which with two apps would pass Docker's 10 s. Not `final` (a replacement): a SIGTERM
        meanwhile raises StopRequested, so that the new apps are never started. Raises UNANSWERED errors."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.stop_grace + STOP_MARGIN
        for program in programs:
            with contextlib.suppress(xmlrpc.client.Fault):  # not running (FATAL, STOPPED, BACKOFF) is fine
                self.supervisor.call("stopProcess", program, False, timeout=_left(deadline))
        while programs and time.monotonic() < deadline:
            if not final:
                self.check_stop_requested()
            infos = self.supervisor.call("getAllProcessInfo", timeout=_left(deadline))
            states = {i["name"]: i["statename"] for i in infos}
            if not any(states.get(p) in ALIVE for p in programs):
                return
            time.sleep(0.05)

    def check_stop_requested(self) -> None:
        signum = self.inbox.pending(signal.SIGTERM, signal.SIGINT) if self.inbox is not None else None
        if signum is not None:
            raise StopRequested(signum)

    def stop(self, code: int, since: float | None = None) -> int:
        """Stop the app groups within the grace (from `since`, when the signal arrived), then supervisord;
        nothing of the apps is left behind."""
        assert self.proc is not None
        self.release_reserve()  # a shortage of fds must not keep us from stopping
        if code != exitcodes.OK:
            termination.write(self.last_said, self.settings.termination_log, self.environ)
        deadline = (time.monotonic() if since is None else since) + self.settings.stop_grace
        answered = self.unanswered_since is None
        if answered:
            try:
                self.stop_apps(list(self.apps), deadline, final=True)
            except (*UNANSWERED, OSError):
                answered = False
        if not answered:
            self.log("supervisord does not answer: stopping the apps without it")
            self.stop_groups(deadline)
            deadline = min(deadline, time.monotonic())  # a frozen supervisord will not exit on its own
        # At the grace whatever supervisord does: it counts its own grace from when it was asked, later.
        self.kill_groups()
        if answered:
            with contextlib.suppress(*CALL_ERRORS):
                self.supervisor.call("shutdown", timeout=_left(deadline + EXIT_SLACK))
        try:
            self.proc.wait(timeout=max(0.2, deadline + EXIT_SLACK - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        procs.kill_session(self.proc.pid)  # an app that a supervisord which missed the stop had respawned
        self.kill_groups()  # only if something escaped supervisord's stop (killasgroup=false)
        return self.finish_stop(code)

    def stop_groups(self, deadline: float) -> None:
        """Without supervisord: SIGTERM to it (it stops its apps, if it can still run) and to the app groups
        (in case it cannot), then wait for them until the deadline."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            self.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # supervisord takes its shutdown before it sees an app exit: no respawn
        for group in self.groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGTERM)
        while time.monotonic() < deadline and any(procs.group_members(g) for g in self.groups):
            time.sleep(0.05)

    def kill_groups(self) -> None:
        for group in self.groups:
            procs.kill_group(group)

    def finish_stop(self, code: int) -> int:
        probe.kill_running()  # a restart's preflight, in its own session
        with contextlib.suppress(RunDirError, OSError):  # a full or removed run dir must not keep us from stopping
            self.flow.stop()
        if os.getpid() == 1:
            procs.reap_orphans(None)
        for rt in self.apps.values():
            with contextlib.suppress(OSError, LaunchError):  # the output's end is worth less than a clean stop
                rt.watch.copy_output(final=True)
            rt.watch.close()
        self.close_sessions()
        remove(self.run.pidfile)
        if self.pidfile_fd is not None:
            os.close(self.pidfile_fd)
            self.pidfile_fd = None
        self.metrics.close()
        self.log(f"stopped (exit {code})")
        self.out.drain(FLUSH_SECONDS)
        self.err.drain(FLUSH_SECONDS)
        return code
