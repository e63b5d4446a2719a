"""The running service's shared state: the settings and apps of the running generation, supervisord's handle,
the restart flow, and what every part writes (its log lines, the state file, the settings file).

`Service` (service.py) is this state with its parts mixed in, each in a room of its own: following the apps
(supervising.py), a new generation on trial and its rollback (generations.py), and the stop (stopping.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping

from launcher.config.instances import policy_met
from launcher.config.settings import Settings
from launcher.preflight.check import CheckResult
from launcher.preflight.fleet import FleetCheck
from launcher.service import statefile
from launcher.service.appruntime import AppRuntime
from launcher.service.control import Supervisor
from launcher.service.restarting import RestartFlow
from launcher.service.supervisor_config import Credentials
from launcher.system.follow import Follower
from launcher.system.outlet import Outlet
from launcher.system.rundir import (
    RunDir,
    identity,
    prepare,
    write_json,
)
from launcher.system.signalinbox import SignalInbox
from launcher.watch import metrics
from launcher.watch.watchdog import Incident


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived during a long step (a replacement): stop, do not start what comes next."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


RESERVED_FDS = 8  # kept open from the start, closed first by the stop: it needs a few (sockets, /proc)


class ServiceState:
    """Fields and output shared by the service's parts; the methods one part needs from another are declared
    at the end, and defined by that part."""

    supervisor: Supervisor

    def __init__(
        self,
        settings: Settings,
        flags: Mapping[str, str | None],
        fleet: FleetCheck,
        environ: Mapping[str, str],
        out: Outlet,
        err: Outlet,
    ) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.out, self.err = out, err
        out.on_drop = self.output_dropped
        self.run: RunDir = prepare(settings.run_dir)
        self.generation = 0
        self.generations_made = 0
        self.credentials: Credentials | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfile_fd: int | None = None
        self.groups: set[int] = set()  # every app process group seen, for the final sweep
        self.wake_w = -1
        self.flow = RestartFlow(self.run, flags, self.environ, self.wake, self.log)
        # supervisord's own log says how an app ended ("exited: app (terminated by SIGKILL; not expected)");
        # getProcessInfo forgets it as soon as the app is respawned.
        self.supervisord_log = Follower(self.run.supervisord_log)
        self.started_at = time.time()
        self.apps: dict[str, AppRuntime] = {}
        self.use_fleet(fleet)
        self.next_read = 0.0  # monotonic time before which the apps' writes are left to gather
        self.replacing = False  # install() is stopping the apps to start another generation
        self.metrics: metrics.NoMetrics = metrics.NoMetrics()
        self.inbox: SignalInbox | None = None
        self.run_identity = identity(self.run.path)
        self.reserve: list[int] = []
        self.unanswered_since: float | None = None  # monotonic time supervisord stopped answering

    def hold_reserve(self) -> None:
        self.reserve = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(RESERVED_FDS)]

    def release_reserve(self) -> None:
        for fd in self.reserve:
            os.close(fd)
        self.reserve = []

    def run_dir_gone(self) -> bool:
        return identity(self.run.path) != self.run_identity
        self.last_said = ""

    def use_fleet(self, fleet: FleetCheck) -> None:
        """The apps of a generation: those that run keep their runtime (and restart budget) by program."""
        self.fleet = self.last_check = fleet
        several = not fleet.single
        old, self.apps = self.apps, {}
        for member in fleet.running:
            runtime = old.pop(member.instance.program, None)
            if runtime is None:
                runtime = AppRuntime(member, fleet.settings, self.run, self.out, several=several)
            else:
                runtime.use(member, fleet.settings)
            self.apps[runtime.program] = runtime
        for gone in old.values():
            gone.forget_process()
            gone.watch.close()

    @property
    def check(self) -> CheckResult:
        return self.fleet.primary

    # -- output ---------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.last_said = message  # an exit's cause is the last thing said before the stop (termination message)
        self.err.write(f"heygem-launch: {message}\n".encode(errors="replace"))

    def output_dropped(self, lines: int, resumed: bool) -> None:
        """From the outlet (the loop, or its thread once the reader is back): a stalled stdout is said, twice."""
        if resumed:
            self.log(f"stdout is read again: {lines} line(s) of the app's output were dropped meanwhile")
        else:
            where = self.run.path
            self.log(f"stdout is not read: the app's output is dropped, not waited for (all of it is in {where})")

    def wake(self) -> None:
        """From the restart thread: wake the loop's select()."""
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"R")

    @property
    def ready(self) -> bool:
        """All apps ready; with HEYGEM_GPU_POLICY=any, at least one."""
        return policy_met(self.settings.gpu_policy, [rt.ready for rt in self.apps.values() if not rt.given_up])

    def save_state(self) -> None:
        apps = list(self.apps.values())
        for member in self.last_check.members:
            verdict = member.check.verdict
            self.metrics.preflight(verdict.ok, verdict.cause, member.instance.program, skipped=verdict.skipped)
        for rt in apps:
            self.metrics.ready(rt.ready, rt.program)
        write_json(
            self.run.state,
            statefile.state_document(
                apps,
                self.fleet,
                self.last_check,
                launcher_pid=os.getpid(),
                started_at=self.started_at,
                generation=self.generation,
                restarting=self.flow.busy() or self.replacing,
                ready=self.ready,
            ),
        )

    def save_settings(self) -> None:
        """The running generation's settings as given, so that `doctor` (and a probe) use the service's own
        settings rather than a .env file that may be mid-edit."""
        raw = statefile.absolute_raw(self.settings, self.run.path, self.check.app.conda.prefix)
        write_json(self.run.settings, statefile.settings_document(self.settings, self.generation, raw))

    def named(self, rt: AppRuntime) -> str:
        """How a log line names an app: `app ` alone, `app-1 (GPU 1 (GPU-…)) ` among several."""
        return "app " if self.fleet.single else f"{rt.program} ({rt.member.instance.gpu_label}) "

    def expect_new_app(self, rt: AppRuntime) -> None:
        """We are replacing the app: its exit is no crash, and nothing seen of it applies to the next one."""
        rt.deliberate = True
        rt.pending_start = rt.stop_sent = False  # a wait for its backoff is over: the new app starts now
        self.metrics.backoff(0.0, rt.program)
        rt.forget_process()

    # -- defined by the parts (stopping.py, generations.py) ---------------------------------------------
    def stop(self, code: int, since: float | None = None) -> int:
        raise NotImplementedError

    def stop_apps(self, programs: list[str], deadline: float | None = None, *, final: bool = False) -> None:
        raise NotImplementedError

    def check_stop_requested(self) -> None:
        raise NotImplementedError

    def rollback(self, reason: str) -> None:
        raise NotImplementedError

    # -- defined by supervising.py --------------------------------------------------------------------------
    def handle_incident(self, rt: AppRuntime, found: Incident) -> int | None:
        raise NotImplementedError

    def give_up(self, rt: AppRuntime, line: str, code: int) -> int | None:
        raise NotImplementedError

    def close_sessions(self) -> None:
        raise NotImplementedError
