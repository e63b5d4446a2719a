"""Run and supervise the app (one per GPU with HEYGEM_GPUS): supervisord as a child, and the loop that follows it.

supervisord runs the app (and retries its quick failures); this loop starts it again after a crash or an incident,
after a growing wait (`restartwaits`), and adds what supervisord lacks: a clean stop within the grace on
SIGTERM/SIGINT (exit 0), giving up when `exitpolicy` says so (exit 70), a validated restart with rollback on
SIGHUP or `heygem-launch restart` (`restarting`), and, as PID 1, reaping of orphans. A run dir that cannot be
written (disk full, read-only) stops everything cleanly with one line. It sleeps in select() on a signal
pipe, pidfds and inotify.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Mapping

from inotify_simple import INotify

from launcher import exitcodes
from launcher.config.settings import Settings
from launcher.errors import LaunchError
from launcher.preflight.fleet import FleetCheck
from launcher.service.conditions import Conditions
from launcher.service.control import UNANSWERED, new_credentials, start_supervisord
from launcher.service.generations import Generations
from launcher.service.gpufaults import GpuFaults
from launcher.service.sessions import SessionIntake
from launcher.service.state import StopRequested
from launcher.service.stopping import Stopping
from launcher.system import ports, procs, termination
from launcher.system.outlet import Outlet
from launcher.system.rundir import (
    RunDirError,
    RunDirGone,
    check_not_in_use,
    remove,
    write_pidfile,
)
from launcher.system.signalinbox import STRAY, SignalInbox

TICK = 0.25  # while the app is between states
IDLE_TIMEOUT = 30.0  # otherwise only a safety net: pidfds, signals and inotify wake the loop
UNWATCHED_POLL = 1.0  # while the app's log folder does not exist yet, so inotify cannot watch it
READ_INTERVAL = 0.4  # seconds writes gather after a read: bounds wakeups under a flood, adds at most this to detection


class Service(Conditions, Stopping, Generations, SessionIntake, GpuFaults):
    """The running launcher: start supervisord with the first generation, then follow it until a stop."""

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        # Checked before the preflight too (`startchecks`); again here, as the preflight gave time to take them.
        check_not_in_use(self.run)
        for rt in self.apps.values():
            ports.check_free(rt.port)
        self.check_metrics_port(self.fleet, self.settings)
        self.metrics = self.serve_metrics(self.settings)
        self.hold_reserve()
        self.pidfile_fd = write_pidfile(self.run)
        for stale in (self.run.socket, self.run.restart_result, *self.run.restart_requests()):
            remove(stale)
        self.credentials = new_credentials(self.run)
        self.write_generation(self.new_generation(self.settings, self.fleet))
        self.save_state()
        self.open_sessions()  # before the apps start: their first session must find it
        self.proc, self.supervisor = start_supervisord(self.run, self.environ)
        self.log(f"supervisord started (pid {self.proc.pid}); control socket {self.run.socket}")
        self.start_gpu_watch()

    # -- the loop -------------------------------------------------------------------------------------
    def serve(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.inbox = inbox = SignalInbox()
        inbox.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, *STRAY))
        try:
            return self.loop(wake_r, inbox)
        except RunDirError as exc:
            gone = self.proc is not None and self.run_dir_gone()
            return self.abort(str(RunDirGone(self.run.path) if gone else exc), exitcodes.SOFTWARE)
        except LaunchError as exc:
            return self.abort(str(exc), exc.exit_code)
        except Exception as exc:  # a bug of ours: still nothing may be left running
            if os.environ.get("HEYGEM_DEBUG"):
                raise
            return self.abort(f"internal error: {type(exc).__name__}: {exc}", exitcodes.SOFTWARE)
        finally:
            signal.set_wakeup_fd(-1)
            self.flow.executor.shutdown(wait=False, cancel_futures=True)
            os.close(wake_r)
            os.close(wake_w)

    def abort(self, message: str, code: int) -> int:
        """One line, then the clean stop (app, supervisord, probes) if anything was started."""
        if self.proc is None:
            self.log(message)
            termination.write(message, self.settings.termination_log, self.environ)
            return code
        self.log(f"{message}; stopping the app and supervisord")
        return self.stop(code)

    def loop(self, wake_r: int, inbox: SignalInbox) -> int:
        """Start supervisord, then follow it until a stop; the exit code."""
        self.start()
        assert self.proc is not None
        supervisord_fd = os.pidfd_open(self.proc.pid)
        # Woken by what happens, not by a clock: each timed wakeup costs CPU even when there is nothing
        # to do (measured: ~1.6 ms a wakeup on this project's VMs), and the launcher idles for days.
        changes = INotify(nonblocking=True)
        try:
            for rt in self.apps.values():
                rt.watch.watch_folders(changes)
            self.watch_run_dir(changes)
            return self.follow(wake_r, inbox, supervisord_fd, changes)
        finally:
            os.close(supervisord_fd)
            changes.close()

    def follow(self, wake_r: int, inbox: SignalInbox, supervisord_fd: int, changes: INotify) -> int:
        """The loop proper: wake on what happened, act, sleep until the next thing is due."""
        assert self.proc is not None
        while True:
            apps = list(self.apps.values())
            for rt in apps:
                rt.watch.watch_log_folder(changes)
            # A chatty app (HeyGem logs ~20 records a second per task, each twice) would wake us on
            # every write: after a read, writes are left to gather for READ_INTERVAL.
            gathering = time.monotonic() < self.next_read
            watched = [wake_r, supervisord_fd] + ([] if gathering else [changes.fileno()])
            watched += [rt.app_pidfd for rt in apps if rt.app_pidfd is not None]
            watched += [self.sessions_inbox.fileno()] if self.sessions_inbox else []
            timeout = self.timeout()
            if gathering:
                timeout = min(timeout, max(0.0, self.next_read - time.monotonic()))
            ready, _, _ = select.select(watched, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            self.check_run_dir(changes.read(timeout=0))
            signals = inbox.take()
            found = self.with_gpu_faults({rt.program: rt.watch.read() for rt in apps})
            for rt in apps:
                rt.incidents += found.get(rt.program, [])
            if any(rt.watch.read_any for rt in apps):
                self.next_read = time.monotonic() + READ_INTERVAL
            stop = signals & {signal.SIGTERM, signal.SIGINT}
            if stop:
                return self.stop_on_signal(signal.SIGTERM if signal.SIGTERM in stop else signal.SIGINT)
            self.say_stray(signals)
            if signal.SIGCHLD in signals and os.getpid() == 1:
                procs.reap_orphans(self.proc.pid)
            if supervisord_fd in ready or self.proc.poll() is not None:
                self.log(f"supervisord exited unexpectedly ({self.proc.poll()})")
                return self.stop(exitcodes.SOFTWARE)
            if signal.SIGHUP in signals:
                self.flow.request(time.time())
            code = self.step(ready)
            if code is not None:
                return code

    def step(self, ready: list[int]) -> int | None:
        """What the wakeup asks of supervisord and the watchdog; an exit code to stop with. supervisord not
        answering is said and asked again at the next wakeup; what was found waits for it."""
        try:
            code = self.act(ready)
        except StopRequested as stop:
            return self.stop_on_signal(stop.signum)
        except UNANSWERED as exc:
            return self.not_answering(exc)
        self.answering()
        return code

    def act(self, ready: list[int]) -> int | None:
        outcome = self.flow.preflight_done()
        if outcome is not None:
            self.finish_restart(outcome)
        for rt in list(self.apps.values()):
            code = self.follow_app(rt, rt.app_pidfd is not None and rt.app_pidfd in ready)
            if code is not None:
                return code
        self.read_sessions()  # after follow_app: a record from an app that just started needs that app's pid
        self.judge_trial()
        changed = False
        for rt in list(self.apps.values()):
            rt.incidents += rt.watch.check(time.time(), rt.app_pid)
            while rt.incidents:
                code = self.handle_incident(rt, rt.incidents.pop(0))
                if code is not None:
                    return code
            readiness = rt.watch.readiness_changed()
            if readiness and rt.watch.saved_ready:
                self.log(f"{self.named(rt)}ready (logged: {', '.join(rt.watch.ready_markers)})")
            changed |= readiness | rt.watch.tasks_changed()
            for task in rt.watch.take_finished():
                seconds = task.ended_at - task.started_at if task.ended_at is not None else None
                self.metrics.task(task.outcome or "hung", seconds, task.fps, rt.program)
        if changed:
            self.save_state()
        return None

    def timeout(self) -> float:
        """How long select() may sleep: until the next thing that is due, without waking for nothing."""
        apps = list(self.apps.values())
        if any(rt.watch.more or rt.incidents for rt in apps):
            return 0.0  # a follower stopped at its budget
        between = self.flow.trial is not None or self.unanswered_since is not None or bool(self.unplaced)
        if between or any(rt.settling() for rt in apps):
            return TICK  # between states, or a restart on trial: supervisord's RUNNING is asked for
        now = time.time()
        trial = self.flow.deadline_in()
        due = self.restart_due_in()
        timeout = min(
            [
                IDLE_TIMEOUT,
                *([due] if due is not None else []),
                *(max(0.0, d - now) for rt in apps for d in rt.watch.deadlines()),
                *([trial] if trial is not None else []),
            ]
        )
        return timeout if all(rt.watch.log_watched for rt in apps) else min(timeout, UNWATCHED_POLL)


def make_service(settings: Settings, flags: Mapping[str, str | None], fleet: FleetCheck) -> Service:
    # Through outlets, not sys.stdout/sys.stderr: a reader that stalls or leaves must never hold the loop.
    return Service(settings, flags, fleet, os.environ, Outlet(1, name="stdout"), Outlet(2, name="stderr"))


def run_service(settings: Settings, flags: Mapping[str, str | None], fleet: FleetCheck) -> int:
    return make_service(settings, flags, fleet).serve()
