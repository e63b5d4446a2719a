"""Run and supervise the app: supervisord as a child, and a loop that turns its states into exit codes.

supervisord restarts the app; this loop adds what supervisord lacks: exit 70 when the app is given up on
(FATAL, or more restarts than allowed in a window), a clean stop within the grace on SIGTERM/SIGINT (exit
0), a validated restart on SIGHUP or `heygem-launch restart`, and, as PID 1, reaping of orphans.
It sleeps in select() on a signal pipe and pidfds; a quarter-second tick copies the app's log to stdout.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, TextIO

from inotify_simple import INotify

from launcher import exitcodes, ports, procs
from launcher.control import CALL_ERRORS, Supervisor, new_credentials
from launcher.errors import LaunchError
from launcher.follow import Follower
from launcher.preflight import CheckResult, preflight
from launcher.report import render_check
from launcher.rundir import RunDir, prepare, running_pid, write_json, write_pidfile, write_private
from launcher.settings import Settings, load_settings
from launcher.supervisor_config import PROGRAM, Credentials, render
from launcher.watchdog import RECORD, RESTART, STOP, WARN, Incident
from launcher.watching import AppWatch

TICK = 0.25  # while the app is between states
IDLE_TIMEOUT = 30.0  # otherwise only a safety net: pidfds, signals and inotify wake the loop
UNWATCHED_POLL = 1.0  # while the app's log folder does not exist yet, so inotify cannot watch it
EXITED = re.compile(rf"exited: {PROGRAM} \((.*)\)$")
SUPERVISORD_START_TIMEOUT = 15.0
READ_INTERVAL = 0.1  # seconds that writes gather after a read: bounds wakeups, adds at most this to detection


@dataclass(frozen=True)
class RestartOutcome:
    requested_at: float
    settings: Settings | None = None
    check: CheckResult | None = None
    error: LaunchError | None = None


class Service:
    def __init__(
        self,
        settings: Settings,
        flags: Mapping[str, str | None],
        check: CheckResult,
        environ: Mapping[str, str],
        out: BinaryIO,
        err: TextIO,
    ) -> None:
        self.settings = settings
        self.flags = dict(flags)
        self.environ = dict(environ)
        self.check = check
        self.out, self.err = out, err
        self.run: RunDir = prepare(settings.run_dir)
        self.generation = 0
        self.credentials: Credentials | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.app_pid: int | None = None  # the wrapper's pid, which is also the app's process group
        self.app_pidfd: int | None = None
        self.groups: set[int] = set()  # every app process group seen, for the final sweep
        self.exit_pending = False
        self.deliberate = False  # a restart we asked for: not counted, not a crash
        self.restarts: deque[float] = deque()
        self.last_exit = ""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restart")
        self.restart_future: Future[RestartOutcome] | None = None
        self.restart_pending = False
        self.restart_result: dict[str, Any] | None = None
        # supervisord's own log says how the app ended ("exited: app (terminated by SIGKILL; not expected)");
        # getProcessInfo forgets it as soon as the app is respawned.
        self.supervisord_log = Follower(self.run.supervisord_log)
        self.exit_reason = ""
        self.started_at = time.time()
        self.watch = AppWatch(settings, self.run, out)
        self.app_started = False
        self.next_read = 0.0  # monotonic time before which the app's writes are left to gather

    # -- output ---------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.err.write(f"heygem-launch: {message}\n")
        self.err.flush()

    def save_state(self) -> None:
        verdict = self.check.verdict
        write_json(
            self.run.state,
            {
                "launcher_pid": os.getpid(),
                "started_at": self.started_at,
                "generation": self.generation,
                "restarts": len(self.restarts),
                "restart_times": list(self.restarts),
                "last_exit": self.last_exit,
                "wrapper_pid": self.app_pid,
                "app_port": self.check.app.port,
                "app_started": self.app_started,
                **self.watch.state(),
                "preflight": {
                    "skipped": self.check.probe.report.get("skipped", False),
                    "ok": verdict.ok,
                    "cause": verdict.cause,
                    "message": verdict.message,
                    "checked_at": self.check.checked_at,
                    "provider": self.check.settings.require_provider,
                },
            },
        )

    # -- start ----------------------------------------------------------------------------------------
    def write_generation(self, settings: Settings, env: Mapping[str, str]) -> None:
        """A new app environment file and the config that points at it; old generations stay until used."""
        assert self.credentials is not None
        self.generation += 1
        env_file = self.run.app_env(self.generation)
        write_json(env_file, dict(env))
        user = "root" if os.geteuid() == 0 else None
        write_private(
            self.run.config,
            render(settings, self.run, self.credentials, env_file=env_file, python=sys.executable, user=user),
        )

    def start(self) -> None:
        other = running_pid(self.run)
        if other is not None and other != os.getpid():
            raise LaunchError(
                f"HEYGEM_RUN_DIR={str(self.run.path)!r}: in use by heygem-launch pid {other}",
                exit_code=exitcodes.CONFIG,
            )
        busy = ports.holders(self.check.app.port)
        if busy:
            raise LaunchError(
                f"port {self.check.app.port} (HEYGEM_APP_PORT / GRADIO_SERVER_PORT) is already in use by "
                f"{', '.join(h.describe() for h in busy)}: Gradio would silently take another port and every "
                "probe would watch the wrong one; stop that process or choose another port",
                exit_code=exitcodes.CONFIG,
            )
        write_pidfile(self.run)
        for stale in (self.run.socket, self.run.restart_result):
            stale.unlink(missing_ok=True)
        self.credentials = new_credentials(self.run)
        self.write_generation(self.settings, self.check.app.env)
        self.save_state()
        # Its own session: tini's signals reach only us, and we stop the app in order. It dies with us.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.run.config)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=procs.die_with_parent,
        )
        self.supervisor = Supervisor(self.run)
        deadline = time.monotonic() + SUPERVISORD_START_TIMEOUT
        last_error: Exception | None = None
        while True:
            if self.proc.poll() is not None:
                raise LaunchError(
                    f"supervisord exited at start ({self.proc.returncode}); see {self.run.supervisord_log}",
                    exit_code=exitcodes.SOFTWARE,
                )
            try:
                if self.supervisor.call("getState")["statename"] == "RUNNING":
                    break
            except CALL_ERRORS as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"supervisord did not answer on {self.run.socket} in time: {last_error}",
                    exit_code=exitcodes.SOFTWARE,
                )
            time.sleep(0.05)
        self.log(f"supervisord started (pid {self.proc.pid}); control socket {self.run.socket}")

    # -- the loop -------------------------------------------------------------------------------------
    def serve(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        received: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, lambda s, _f: received.append(s))
        try:
            self.start()
            assert self.proc is not None
            supervisord_fd = os.pidfd_open(self.proc.pid)
            # Woken by what happens, not by a clock: each timed wakeup costs CPU even when there is nothing
            # to do (measured: ~1.6 ms a wakeup on this project's VMs), and the launcher idles for days.
            changes = INotify(nonblocking=True)
            self.watch.watch_folders(changes)
            while True:
                self.watch.watch_log_folder(changes)
                # A chatty app (HeyGem logs ~20 records a second per task, each twice) would wake us on
                # every write: after a read, writes are left to gather for READ_INTERVAL.
                gathering = time.monotonic() < self.next_read
                watched = [wake_r, supervisord_fd] + ([] if gathering else [changes.fileno()])
                watched += [self.app_pidfd] if self.app_pidfd is not None else []
                timeout = self.timeout()
                if gathering:
                    timeout = min(timeout, max(0.0, self.next_read - time.monotonic()))
                ready, _, _ = select.select(watched, [], [], timeout)
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                changes.read(timeout=0)
                signals, received[:] = set(received), []
                found = self.watch.read()
                if self.watch.read_any:
                    self.next_read = time.monotonic() + READ_INTERVAL
                if signals & {signal.SIGTERM, signal.SIGINT}:
                    name = "SIGTERM" if signal.SIGTERM in signals else "SIGINT"
                    self.log(f"{name}: stopping the app (grace {self.settings.stop_grace} s)")
                    return self.stop(exitcodes.OK)
                if signal.SIGCHLD in signals and os.getpid() == 1:
                    procs.reap_orphans(self.proc.pid)
                if supervisord_fd in ready or self.proc.poll() is not None:
                    self.log(f"supervisord exited unexpectedly ({self.proc.poll()})")
                    return self.stop(exitcodes.SOFTWARE)
                if signal.SIGHUP in signals:
                    self.request_restart(time.time())
                if self.restart_future is not None and self.restart_future.done():
                    self.finish_restart()
                failure = self.watch_app(self.app_pidfd is not None and self.app_pidfd in ready)
                if failure:
                    self.log(failure)
                    return self.stop(exitcodes.SOFTWARE)
                found += self.watch.check(time.time(), self.app_pid)
                for incident in found:
                    code = self.handle_incident(incident)
                    if code is not None:
                        return code
                readiness = self.watch.readiness_changed()
                if readiness and self.watch.saved_ready:
                    self.log(f"app ready (logged: {', '.join(self.settings.ready_markers)})")
                if readiness | self.watch.tasks_changed():
                    self.save_state()
        finally:
            signal.set_wakeup_fd(-1)
            self.executor.shutdown(wait=False, cancel_futures=True)

    def timeout(self) -> float:
        """How long select() may sleep: until the next thing that is due, without waking for nothing."""
        if self.watch.more:
            return 0.0  # a follower stopped at its budget
        if self.settling():
            return TICK
        now = time.time()
        timeout = min([IDLE_TIMEOUT, *(max(0.0, d - now) for d in self.watch.deadlines())])
        return timeout if self.watch.log_watched else min(timeout, UNWATCHED_POLL)

    def handle_incident(self, found: Incident) -> int | None:
        """Snapshot first, then the cure the watchdog named: restart the app, stop (CPU fallback), or only
        record (a failed task that ended). An exit code to stop with."""
        if found.action == RESTART and self.deliberate:
            return None  # the app is being replaced already: the same episode, seen once more
        summary, _path = self.watch.record(found, self.app_pid)
        self.log(summary)
        if found.action in (RECORD, WARN):
            if found.action == WARN:
                self.log("HEYGEM_ON_CPU_FALLBACK=warn: the app keeps running, on the CPU")
            self.save_state()
            return None
        if found.action == STOP:
            self.watch.keep_open()
            self.save_state()
            self.log(f"REFUSED [provider_not_used]: the app fell back to the CPU at run time: {found.line[:300]}")
            return self.stop(exitcodes.UNAVAILABLE)
        self.watch.keep_open()
        if self.count_restart():
            self.log(
                f"{len(self.restarts)} restarts in {self.settings.restart_window:.0f} s "
                f"(HEYGEM_MAX_RESTARTS={self.settings.max_restarts}): giving up; last incident: {found.kind}"
            )
            return self.stop(exitcodes.SOFTWARE)
        self.save_state()
        self.restart_app()
        return None

    def count_restart(self) -> bool:
        """Record a restart; True when there have been too many in the window."""
        now = time.time()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - self.settings.restart_window:
            self.restarts.popleft()
        return len(self.restarts) > self.settings.max_restarts

    def restart_app(self) -> None:
        """Stop the app's group (SIGKILL at the grace) and start it again; the wrapper clears the old group."""
        self.expect_new_app()
        with contextlib.suppress(xmlrpc.client.Fault):  # already stopped
            self.supervisor.call("stopProcess", PROGRAM, True)
        self.supervisor.call("startProcess", PROGRAM, False)

    def expect_new_app(self) -> None:
        """We are replacing the app: its exit is no crash, and nothing seen of it applies to the next one."""
        self.deliberate = True
        if self.app_pidfd is not None:
            os.close(self.app_pidfd)
            self.app_pidfd = None
        self.app_pid = None
        self.exit_pending = False
        self.watch.new_instance()

    def settling(self) -> bool:
        """The app is between states (starting, exited, being replaced): supervisord must be asked often."""
        return self.app_pidfd is None or self.exit_pending or self.deliberate

    def watch_app(self, exited: bool) -> str | None:
        """Follow the app through supervisord's states; a message when it must be given up on."""
        if self.app_pidfd is not None and not exited and not self.exit_pending:
            return None  # steady state: nothing to ask supervisord
        info = self.supervisor.call("getProcessInfo", PROGRAM)
        if exited:
            assert self.app_pidfd is not None and self.app_pid is not None
            os.close(self.app_pidfd)
            self.app_pidfd = None
            self.exit_pending = not self.deliberate
            self.watch.new_instance()
            # The wrapper clears its group before it exits; if the wrapper itself was killed, we do it.
            if procs.kill_group(self.app_pid):
                self.log(f"killed what was left of the app's process group {self.app_pid}")
        state, pid = info["statename"], info["pid"]
        for line in self.supervisord_log.read():
            match = EXITED.search(line.decode(errors="replace"))
            if match:
                self.exit_reason = match.group(1)
        if self.exit_pending and (pid != self.app_pid or state not in ("RUNNING", "STARTING")):
            self.exit_pending = False
            self.app_pid = None
            self.last_exit = self.exit_reason or info["description"] or f"exit status {info['exitstatus']}"
            too_many = self.count_restart()
            self.save_state()
            self.log(f"app exited ({self.last_exit}); supervisord restarts it")
            if too_many:
                return (
                    f"app restarted {len(self.restarts)} times in {self.settings.restart_window:.0f} s "
                    f"(HEYGEM_MAX_RESTARTS={self.settings.max_restarts}); last: {self.last_exit}; "
                    f"last output: {self.last_output()}"
                )
        if state == "FATAL":
            reason = info["spawnerr"] or self.last_exit or info["description"]
            return (
                f"app gave up after {self.settings.start_retries} quick failures: {reason}; "
                f"last output: {self.last_output()}"
            )
        if state in ("STARTING", "RUNNING") and pid and pid != self.app_pid and self.app_pidfd is None:
            self.app_pid = pid
            self.app_pidfd = os.pidfd_open(pid)
            self.watch.started(procs.start_time(pid) or float(info["start"]))
            self.groups.add(pid)
            app = procs.first_child(pid)
            self.log(f"app started: pid {app or '?'} (wrapper {pid}), generation {self.generation}")
            self.app_started = True
            self.save_state()
            if self.deliberate:
                self.deliberate = False
                self.complete_restart(app)
        return None

    def last_output(self, count: int = 5) -> str:
        try:
            with open(self.run.app_log, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - 8192))
                tail = handle.read().decode(errors="replace").splitlines()[-count:]
        except OSError:
            return "(none)"
        return " | ".join(line.strip()[:200] for line in tail if line.strip()) or "(none)"

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self, code: int) -> int:
        """Stop the app group within the grace, then supervisord; nothing of the app is left behind."""
        assert self.proc is not None
        with contextlib.suppress(*CALL_ERRORS):
            self.supervisor.call("shutdown")
        try:
            self.proc.wait(timeout=self.settings.stop_grace + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for group in self.groups:
            procs.kill_group(group)  # only if something escaped supervisord's stop (killasgroup=false)
        if os.getpid() == 1:
            procs.reap_orphans(None)
        self.watch.copy_output(final=True)
        self.watch.close()
        self.run.pidfile.unlink(missing_ok=True)
        self.log(f"stopped (exit {code})")
        return code

    # -- restart after a config change ---------------------------------------------------------------
    def request_restart(self, requested_at: float) -> None:
        if self.restart_future is not None:
            self.restart_pending = True
            return
        self.log("restart requested: reading the settings and .env anew, preflight while the app keeps serving")
        self.restart_future = self.executor.submit(self.restart_preflight, requested_at)
        self.restart_future.add_done_callback(lambda _f: os.write(self.wake_w, b"R"))

    def restart_preflight(self, requested_at: float) -> RestartOutcome:
        try:
            settings = load_settings(self.flags, self.environ)
            # The run dir holds the running service's socket: it cannot move while it runs.
            settings = replace(settings, run_dir=self.settings.run_dir)
            return RestartOutcome(requested_at, settings, preflight(settings, self.environ))
        except LaunchError as exc:
            return RestartOutcome(requested_at, error=exc)

    def finish_restart(self) -> None:
        assert self.restart_future is not None
        outcome = self.restart_future.result()
        self.restart_future = None
        result: dict[str, Any] = {"requested_at": outcome.requested_at, "finished_at": time.time()}
        if outcome.error is not None:
            result.update(ok=False, exit_code=outcome.error.exit_code, message=str(outcome.error))
            self.log(f"restart refused: {outcome.error}; the app keeps running")
            self.publish_restart(result)
        else:
            assert outcome.check is not None and outcome.settings is not None
            self.check = outcome.check
            self.save_state()
            result["check"] = outcome.check.as_dict()
            result["report"] = render_check(outcome.check)
            if not outcome.check.ok:
                result.update(
                    ok=False,
                    exit_code=exitcodes.UNAVAILABLE,
                    message=f"refused [{outcome.check.verdict.cause}]: {outcome.check.verdict.message}",
                )
                self.log(f"restart refused by the preflight ({outcome.check.verdict.cause}); the app keeps running")
                self.publish_restart(result)
            else:
                self.settings = outcome.settings
                self.restart_result = result
                self.replace_app(outcome.check)
        if self.restart_pending:
            self.restart_pending = False
            self.request_restart(time.time())

    def replace_app(self, check: CheckResult) -> None:
        """Point supervisord at the new environment and restart the app group (supervisorctl's `update`)."""
        self.write_generation(self.settings, check.app.env)
        self.watch.use(self.settings)  # new patterns and markers, if any
        self.expect_new_app()
        self.supervisor.call("reloadConfig")
        with contextlib.suppress(xmlrpc.client.Fault):  # already stopped (FATAL, BACKOFF) is fine
            self.supervisor.call("stopProcessGroup", PROGRAM, True)
        self.supervisor.call("removeProcessGroup", PROGRAM)
        self.supervisor.call("addProcessGroup", PROGRAM)
        for old in range(1, self.generation):
            self.run.app_env(old).unlink(missing_ok=True)
        self.log(f"preflight passed; app restarting with generation {self.generation}")

    def complete_restart(self, app_pid: int | None) -> None:
        if self.restart_result is None:
            return
        result, self.restart_result = self.restart_result, None
        result.update(
            ok=True,
            exit_code=exitcodes.OK,
            message=f"app restarted with the new environment (pid {app_pid}, generation {self.generation})",
            app_pid=app_pid,
            finished_at=time.time(),
        )
        self.publish_restart(result)

    def publish_restart(self, result: dict[str, Any]) -> None:
        write_json(self.run.restart_result, result)


def run_service(settings: Settings, flags: Mapping[str, str | None], check: CheckResult) -> int:
    service = Service(settings, flags, check, os.environ, sys.stdout.buffer, sys.stderr)
    return service.serve()
