"""The stop: every app's group within the grace (together, not one grace after another), then supervisord;
nothing of the apps is left behind, whatever asked for the stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import xmlrpc.client

from launcher import exitcodes
from launcher.errors import LaunchError
from launcher.preflight import probe
from launcher.service.control import CALL_ERRORS
from launcher.service.state import ServiceState
from launcher.system import procs, termination
from launcher.system.rundir import (
    RunDirError,
    remove,
)

STOP_MARGIN = 2.0  # beyond the stop grace: supervisord's SIGKILL and the reaping


class Stopping(ServiceState):
    # -- stop -----------------------------------------------------------------------------------------
    def stop_apps(self, programs: list[str]) -> None:
        """Stop the apps together, each SIGTERM then SIGKILL at the grace, and wait for all: supervisord
        stops its groups one after the other (shutdown and stopProcessGroup alike), one grace each, which
        with two apps would pass Docker's 10 s."""
        for program in programs:
            with contextlib.suppress(xmlrpc.client.Fault):  # not running (FATAL, STOPPED, BACKOFF) is fine
                self.supervisor.call("stopProcess", program, False)
        deadline = time.monotonic() + self.settings.stop_grace + STOP_MARGIN
        while programs and time.monotonic() < deadline:
            states = {i["name"]: i["statename"] for i in self.supervisor.call("getAllProcessInfo")}
            if not any(states.get(p) in ("STOPPING", "RUNNING", "STARTING", "BACKOFF") for p in programs):
                return
            time.sleep(0.05)

    def stop(self, code: int) -> int:
        """Stop the app groups within the grace, then supervisord; nothing of the apps is left behind."""
        assert self.proc is not None
        if code != exitcodes.OK:
            termination.write(self.last_said, self.settings.termination_log, self.environ)
        with contextlib.suppress(*CALL_ERRORS):
            self.stop_apps(list(self.apps))
        with contextlib.suppress(*CALL_ERRORS):
            self.supervisor.call("shutdown")
        try:
            self.proc.wait(timeout=self.settings.stop_grace + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for group in self.groups:
            procs.kill_group(group)  # only if something escaped supervisord's stop (killasgroup=false)
        probe.kill_running()  # a restart's preflight, in its own session
        with contextlib.suppress(RunDirError):  # a full disk must not keep us from stopping
            self.flow.stop()
        if os.getpid() == 1:
            procs.reap_orphans(None)
        for rt in self.apps.values():
            with contextlib.suppress(OSError, LaunchError):  # the output's end is worth less than a clean stop
                rt.watch.copy_output(final=True)
            rt.watch.close()
        remove(self.run.pidfile)
        if self.pidfile_fd is not None:
            os.close(self.pidfile_fd)
            self.pidfile_fd = None
        self.log(f"stopped (exit {code})")
        return code
