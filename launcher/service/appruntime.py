"""One supervised app as the service loop follows it: its supervisord program, its process, its watch, its
restart budget. With `HEYGEM_GPUS` there is one per GPU, each on its own: a crash or an incident of one
restarts only that one and counts only against its own HEYGEM_MAX_RESTARTS window."""

from __future__ import annotations

import os
import time
from typing import Any

from launcher.config.settings import Settings
from launcher.preflight.fleet import MemberCheck
from launcher.service.exitpolicy import Backoff, RestartBudget
from launcher.system.outlet import Outlet
from launcher.system.rundir import RunDir
from launcher.watch.watchdog import Incident
from launcher.watch.watching import AppWatch


class AppRuntime:
    def __init__(self, member: MemberCheck, settings: Settings, run: RunDir, out: Outlet, *, several: bool) -> None:
        self.member = member
        self.program = member.instance.program
        self.app_pid: int | None = None  # the wrapper's pid, which is also the app's process group
        self.app_pidfd: int | None = None
        self.exit_pending = False
        self.deliberate = False  # a restart we asked for: not counted, not a crash
        self.restarts = RestartBudget(settings)
        self.backoff = Backoff(settings)
        self.last_exit = ""
        self.exit_reason = ""  # supervisord's log line for its last exit, until used
        self.app_started = False
        self.given_up = ""  # HEYGEM_GPU_POLICY=any: why this app was stopped while the others run on
        # A restart in steps, one a wakeup, so that the loop (and SIGTERM) never waits for an app slow to stop:
        # stop asked, then started once supervisord calls it stopped.
        self.pending_start = False
        self.stop_sent = False
        self.incidents: list[Incident] = []  # found, not yet acted on (kept when supervisord did not answer)
        # Several apps share the app dir and so HeyGem's ./log/dh.log: each is watched through its own output.
        self.watch = AppWatch(
            settings,
            run,
            out,
            program=self.program,
            own_log=not several,
            prefix=f"[{self.program}] ".encode() if several else b"",
        )

    @property
    def port(self) -> int:
        return self.member.check.app.port

    def use(self, member: MemberCheck, settings: Settings) -> None:
        """A new generation's check and settings for this app."""
        self.member = member
        self.watch.use(settings)
        self.restarts.use(settings)
        self.backoff.use(settings)

    def forget_process(self) -> None:
        """Nothing seen of the old process applies to the next one."""
        if self.app_pidfd is not None:
            os.close(self.app_pidfd)
            self.app_pidfd = None
        self.app_pid = None
        self.exit_pending = False
        self.exit_reason = ""
        self.watch.new_instance()

    @property
    def ready(self) -> bool:
        return self.app_pidfd is not None and self.watch.ready

    def settling(self) -> bool:
        """Between states (starting, exited, being replaced): supervisord must be asked often."""
        if self.given_up:
            return False
        if self.pending_start and self.stop_sent and self.backoff.left(time.monotonic()) > 0:
            return False  # waiting out its backoff: the loop wakes at its end (RestartWaits.restart_due_in)
        return self.app_pidfd is None or self.exit_pending or self.deliberate or self.pending_start

    def state(self) -> dict[str, Any]:
        """Its part of the state file."""
        verdict = self.member.check.verdict
        return {
            **self.member.instance.as_dict(),
            "gpu": self.member.instance.gpu_label,
            "port": self.port,
            "wrapper_pid": self.app_pid,
            "app_started": self.app_started,
            "restarts": len(self.restarts),
            "restart_times": list(self.restarts.times),
            "last_exit": self.last_exit,
            # The wait before this app starts again (0: none), and when it ends (seconds since the epoch).
            "restart_backoff": self.backoff.delay if self.pending_start else 0.0,
            "restart_at": time.time() + self.backoff.left(time.monotonic()) if self.pending_start else None,
            "given_up": self.given_up or None,
            "preflight": verdict.summary(),
            **self.watch.state(),
        }
