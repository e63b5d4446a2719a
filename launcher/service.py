"""Run and supervise the app (one per GPU with HEYGEM_GPUS): supervisord as a child, and the loop that follows it.

supervisord restarts the app; this loop adds what supervisord lacks: a clean stop within the grace on
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
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import replace
from typing import BinaryIO, TextIO

from inotify_simple import INotify

from launcher import exitcodes, exitpolicy, gpu, metrics, ports, probe, procs, statefile
from launcher.appruntime import AppRuntime
from launcher.control import CALL_ERRORS, Supervisor, new_credentials
from launcher.errors import ConfigError, LaunchError
from launcher.fleet import FleetCheck
from launcher.follow import Follower
from launcher.instances import policy_met
from launcher.loaderenv import launcher_child_env
from launcher.preflight import CheckResult
from launcher.restarting import PASSED, Generation, RestartFlow
from launcher.rundir import (
    RunDir,
    RunDirError,
    check_not_in_use,
    prepare,
    remove,
    write_json,
    write_pidfile,
    write_private,
)
from launcher.settings import Settings
from launcher.signalinbox import SignalInbox
from launcher.startchecks import metrics_clash
from launcher.supervisor_config import AppProgram, Credentials, render
from launcher.watchdog import RECORD, RESTART, STOP, WARN, Incident

TICK = 0.25  # while the app is between states
IDLE_TIMEOUT = 30.0  # otherwise only a safety net: pidfds, signals and inotify wake the loop
UNWATCHED_POLL = 1.0  # while the app's log folder does not exist yet, so inotify cannot watch it
SUPERVISORD_START_TIMEOUT = 15.0
APP_PID_WAIT = 2.0  # the wrapper forks the app at once; this bounds the wait for its pid under load
EXIT_LINE_WAIT = 1.0  # supervisord logs how the app ended as it reaps it; this bounds the wait for that line
STOP_MARGIN = 2.0  # beyond the stop grace: supervisord's SIGKILL and the reaping
READ_INTERVAL = 0.1  # seconds that writes gather after a read: bounds wakeups, adds at most this to detection


class Service:
    def __init__(
        self,
        settings: Settings,
        flags: Mapping[str, str | None],
        fleet: FleetCheck,
        environ: Mapping[str, str],
        out: BinaryIO,
        err: TextIO,
    ) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.out, self.err = out, err
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
        self.err.write(f"heygem-launch: {message}\n")
        self.err.flush()

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

    # -- start ----------------------------------------------------------------------------------------
    def new_generation(self, settings: Settings, fleet: FleetCheck) -> Generation:
        self.generations_made += 1
        return Generation(self.generations_made, settings, fleet)

    def write_generation(self, generation: Generation) -> None:
        """Each app's environment file of the generation, and the config that points at them."""
        assert self.credentials is not None
        self.generation = generation.number
        self.settings = generation.settings
        self.use_fleet(generation.check)
        programs = []
        for rt in self.apps.values():
            env_file = self.run.app_env(generation.number, rt.program)
            write_json(env_file, dict(rt.member.check.app.env))
            programs.append(AppProgram(rt.program, env_file))
        user = "root" if os.geteuid() == 0 else None
        write_private(
            self.run.config,
            render(
                self.settings, self.run, self.credentials, python=sys.executable, user=user, programs=tuple(programs)
            ),
        )
        self.save_settings()

    def check_metrics_port(self, fleet: FleetCheck) -> None:
        """The metrics server must not take an app's port (`startchecks.metrics_clash`): ConfigError (78)."""
        clash = metrics_clash(self.settings.metrics_port, [member.instance for member in fleet.running])
        if clash:
            raise ConfigError(clash)

    def start(self) -> None:
        # Checked before the preflight too (`startchecks`); again here, as the preflight gave time to take them.
        check_not_in_use(self.run)
        for rt in self.apps.values():
            ports.check_free(rt.port)
        self.check_metrics_port(self.fleet)
        try:
            self.metrics = metrics.make(self.settings.metrics_port, gpu.inventory)
        except OSError as exc:
            raise LaunchError(
                f"HEYGEM_METRICS_PORT={self.settings.metrics_port}: cannot serve metrics there: {exc.strerror}",
                exit_code=exitcodes.CONFIG,
            ) from None
        self.pidfile_fd = write_pidfile(self.run)
        for stale in (self.run.socket, self.run.restart_result, *self.run.restart_requests()):
            remove(stale)
        self.credentials = new_credentials(self.run)
        self.write_generation(self.new_generation(self.settings, self.fleet))
        self.save_state()
        # Its own session: tini's signals reach only us, and we stop the app in order. It dies with us.
        # Loader-safe and without our HEYGEM_* settings: supervisord and the app's wrapper (which runs in the
        # app dir) must not search the current directory for libraries, nor preload anything.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.run.config)],
            stdin=subprocess.DEVNULL,
            env=launcher_child_env(self.environ),
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
        inbox = SignalInbox()
        inbox.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD))
        try:
            return self.loop(wake_r, inbox)
        except RunDirError as exc:
            return self.abort(str(exc), exitcodes.SOFTWARE)
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
            timeout = self.timeout()
            if gathering:
                timeout = min(timeout, max(0.0, self.next_read - time.monotonic()))
            ready, _, _ = select.select(watched, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            changes.read(timeout=0)
            signals = inbox.take()
            found = {rt.program: rt.watch.read() for rt in apps}
            if any(rt.watch.read_any for rt in apps):
                self.next_read = time.monotonic() + READ_INTERVAL
            if signals & {signal.SIGTERM, signal.SIGINT}:
                name = "SIGTERM" if signal.SIGTERM in signals else "SIGINT"
                what = "the app" if self.fleet.single else f"the {len(self.apps)} apps"
                self.log(f"{name}: stopping {what} (grace {self.settings.stop_grace} s)")
                return self.stop(exitcodes.OK)
            if signal.SIGCHLD in signals and os.getpid() == 1:
                procs.reap_orphans(self.proc.pid)
            if supervisord_fd in ready or self.proc.poll() is not None:
                self.log(f"supervisord exited unexpectedly ({self.proc.poll()})")
                return self.stop(exitcodes.SOFTWARE)
            if signal.SIGHUP in signals:
                self.flow.request(time.time())
            outcome = self.flow.preflight_done()
            if outcome is not None:
                self.finish_restart(outcome)
            for rt in list(self.apps.values()):
                code = self.follow_app(rt, rt.app_pidfd is not None and rt.app_pidfd in ready)
                if code is not None:
                    return code
            self.judge_trial()
            changed = False
            for rt in list(self.apps.values()):
                incidents = found.get(rt.program, []) + rt.watch.check(time.time(), rt.app_pid)
                for incident in incidents:
                    code = self.handle_incident(rt, incident)
                    if code is not None:
                        return code
                readiness = rt.watch.readiness_changed()
                if readiness and rt.watch.saved_ready:
                    self.log(f"{self.named(rt)}ready (logged: {', '.join(self.settings.ready_markers)})")
                changed |= readiness | rt.watch.tasks_changed()
                for task in rt.watch.take_finished():
                    seconds = task.ended_at - task.started_at if task.ended_at is not None else None
                    self.metrics.task(task.outcome or "hung", seconds, task.fps, rt.program)
            if changed:
                self.save_state()

    def named(self, rt: AppRuntime) -> str:
        """How a log line names an app: `app ` alone, `app-1 (GPU 1 (GPU-…)) ` among several."""
        return "app " if self.fleet.single else f"{rt.program} ({rt.member.instance.gpu_label}) "

    def timeout(self) -> float:
        """How long select() may sleep: until the next thing that is due, without waking for nothing."""
        apps = list(self.apps.values())
        if any(rt.watch.more for rt in apps):
            return 0.0  # a follower stopped at its budget
        if self.flow.trial is not None or any(rt.settling() for rt in apps):
            return TICK  # between states, or a restart on trial: supervisord's RUNNING is asked for
        now = time.time()
        trial = self.flow.deadline_in()
        timeout = min(
            [
                IDLE_TIMEOUT,
                *(max(0.0, d - now) for rt in apps for d in rt.watch.deadlines()),
                *([trial] if trial is not None else []),
            ]
        )
        return timeout if all(rt.watch.log_watched for rt in apps) else min(timeout, UNWATCHED_POLL)

    def handle_incident(self, rt: AppRuntime, found: Incident) -> int | None:
        """Snapshot first, then the cure the watchdog named: restart the app, stop (CPU fallback), or only
        record (a failed task that ended). An exit code to stop with."""
        if found.action == RESTART and rt.deliberate:
            return None  # the app is being replaced already: the same episode, seen once more
        summary, _path = rt.watch.record(found, rt.app_pid)
        self.log(summary if self.fleet.single else f"{rt.program}: {summary}")
        self.metrics.incident(found.kind, rt.program)
        if found.action in (RECORD, WARN):
            if found.action == WARN:
                self.log(f"HEYGEM_ON_CPU_FALLBACK=warn: the {self.named(rt)}keeps running, on the CPU")
            self.save_state()
            return None
        if found.action == STOP:
            rt.watch.keep_open()
            line = (
                f"REFUSED [provider_not_used]: the {self.named(rt)}fell back to the CPU at run time: {found.line[:300]}"
            )
            return self.give_up(rt, line, exitcodes.UNAVAILABLE)
        rt.watch.keep_open()
        if self.flow.trial is not None:  # the new generation misbehaves before it was ready: roll back
            self.rollback(f"the new {self.named(rt)}had an incident ({found.kind}) before it was ready")
            return None
        self.metrics.restart(rt.program)
        if rt.restarts.record(time.time()):
            return self.give_up(rt, rt.restarts.exceeded(f"incident {found.kind}"), exitcodes.SOFTWARE)
        self.save_state()
        self.restart_app(rt)
        return None

    def give_up(self, rt: AppRuntime, line: str, code: int) -> int | None:
        """An app that cannot go on. One app, or HEYGEM_GPU_POLICY=all: stop everything with `code`. With `any`
        and another app still running: stop only this one, and say so."""
        others = [o for o in self.apps.values() if o is not rt and not o.given_up]
        if not self.fleet.single and rt.program not in line:
            line = f"{self.named(rt)}: {line}".replace(" : ", ": ")
        if self.fleet.single or self.settings.gpu_policy != "any" or not others:
            self.save_state()
            self.log(line)
            return self.stop(code)
        self.log(f"{line}; HEYGEM_GPU_POLICY=any: stopping {rt.program} only, {len(others)} app(s) run on")
        rt.given_up = line
        rt.deliberate = True
        with contextlib.suppress(xmlrpc.client.Fault):
            self.supervisor.call("stopProcess", rt.program, True)
        rt.forget_process()
        self.metrics.app_started(None, rt.program)
        self.save_state()
        return None

    def restart_app(self, rt: AppRuntime) -> None:
        """Stop the app's group (SIGKILL at the grace) and start it again; the wrapper clears the old group."""
        self.expect_new_app(rt)
        with contextlib.suppress(xmlrpc.client.Fault):  # already stopped
            self.supervisor.call("stopProcess", rt.program, True)
        self.supervisor.call("startProcess", rt.program, False)

    def expect_new_app(self, rt: AppRuntime) -> None:
        """We are replacing the app: its exit is no crash, and nothing seen of it applies to the next one."""
        rt.deliberate = True
        rt.forget_process()

    def read_exit_reasons(self) -> None:
        """supervisord's log lines on how apps ended, each kept for its app until used."""
        for program, how in exitpolicy.reasons_from_log(self.supervisord_log.read()).items():
            if program in self.apps:
                self.apps[program].exit_reason = how

    def follow_app(self, rt: AppRuntime, exited: bool) -> int | None:
        """Follow an app through supervisord's states; an exit code when the service must stop."""
        if rt.given_up:
            return None
        failure = self.watch_app(rt, exited)
        if failure is None:
            return None
        return self.give_up(rt, failure, exitcodes.SOFTWARE)

    def watch_app(self, rt: AppRuntime, exited: bool) -> str | None:
        """Follow the app through supervisord's states; a message when it must be given up on."""
        if rt.app_pidfd is not None and not exited and not rt.exit_pending:
            return None  # steady state: nothing to ask supervisord
        info = self.supervisor.call("getProcessInfo", rt.program)
        self.read_exit_reasons()  # only now: a read of supervisord's log on every wakeup costs a chatty app's
        if exited:
            assert rt.app_pidfd is not None and rt.app_pid is not None
            os.close(rt.app_pidfd)
            rt.app_pidfd = None
            rt.exit_pending = not rt.deliberate
            rt.watch.new_instance()
            # The wrapper clears its group before it exits; if the wrapper itself was killed, we do it.
            if procs.kill_group(rt.app_pid):
                self.log(f"killed what was left of the {self.named(rt)}process group {rt.app_pid}")
        state, pid = info["statename"], info["pid"]
        ended = rt.exit_pending and (pid != rt.app_pid or state not in ("RUNNING", "STARTING"))
        if ended or (self.flow.trial is not None and state in ("BACKOFF", "EXITED", "FATAL")):
            rt.exit_pending = False
            rt.app_pid = None
            rt.last_exit = self.ended_how(rt, info)
            if self.flow.trial is not None:
                self.rollback(f"the new {self.named(rt)}exited ({rt.last_exit}) before it was ready")
                return None
            self.metrics.restart(rt.program)
            too_many = rt.restarts.record(time.time())
            self.save_state()
            self.log(f"{self.named(rt)}exited ({rt.last_exit}); supervisord restarts it")
            if too_many:
                return rt.restarts.crashed_too_often(rt.last_exit, self.last_output(rt))
        if state == "FATAL":
            reason = info["spawnerr"] or rt.last_exit or exitpolicy.exit_reason(None, info)
            return exitpolicy.fatal_line(self.settings, reason, self.last_output(rt))
        if state in ("STARTING", "RUNNING") and pid and pid != rt.app_pid and rt.app_pidfd is None:
            rt.app_pid = pid
            rt.app_pidfd = os.pidfd_open(pid)
            started = procs.start_time(pid) or float(info["start"])
            rt.watch.started(started)
            self.metrics.app_started(started, rt.program)
            self.groups.add(pid)
            app = self.app_of(pid)
            shown = f"pid {app} (wrapper {pid})" if app else f"wrapper pid {pid}"
            self.log(f"{self.named(rt)}started: {shown}, generation {self.generation}")
            rt.app_started = True
            self.save_state()
            if rt.deliberate:
                rt.deliberate = False
                if self.flow.trial is not None and self.flow.trial.app_pid is None:
                    self.flow.trial.app_pid = app
        return None

    def app_of(self, wrapper: int) -> int | None:
        """The app's pid: the wrapper's first child, which it forks at once (bounded wait, never '?')."""
        deadline = time.monotonic() + APP_PID_WAIT
        while True:
            app = procs.first_child(wrapper)
            if app or time.monotonic() > deadline or procs.read_proc(wrapper) is None:
                return app
            time.sleep(0.01)

    def ended_how(self, rt: AppRuntime, info: Mapping[str, object]) -> str:
        """How the app ended, with its exit status or signal: supervisord's log line, waited for briefly."""
        deadline = time.monotonic() + EXIT_LINE_WAIT
        while not rt.exit_reason and time.monotonic() < deadline:
            time.sleep(0.05)
            self.read_exit_reasons()
        how, rt.exit_reason = exitpolicy.exit_reason(rt.exit_reason or None, info), ""
        return how

    def last_output(self, rt: AppRuntime) -> str:
        return exitpolicy.last_output(self.run.program_log(rt.program))

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

    # -- restart after a config change (restarting.py holds the flow) ----------------------------------
    def finish_restart(self, outcome) -> None:  # type: ignore[no-untyped-def]
        """The restart's preflight is done: refuse (the apps untouched), or install the new generation on trial."""
        if outcome.error is None and outcome.check is not None:
            ours = {rt.port for rt in self.apps.values()}
            try:
                self.check_metrics_port(outcome.check)
                for member in outcome.check.running:
                    if member.check.app.port not in ours:
                        ports.check_free(member.check.app.port)  # a move onto a busy port: Gradio would go elsewhere
            except LaunchError as exc:
                outcome = replace(outcome, error=exc)
        if outcome.error is not None or outcome.check is None or not outcome.check.ok:
            if outcome.check is not None:
                self.last_check = outcome.check  # `status` shows the last preflight, even a refused one
                self.save_state()
            self.flow.refuse(outcome)
            self.flow.next()
            return
        assert outcome.settings is not None
        previous = Generation(self.generation, self.settings, self.fleet)
        self.flow.start_trial(outcome, previous, outcome.settings.restart_timeout)
        self.install(self.new_generation(outcome.settings, outcome.check))
        self.log(f"preflight {outcome.check.verdict.result}; app restarting with generation {self.generation}")

    def install(self, generation: Generation) -> None:
        """Point supervisord at a generation and restart the app groups (supervisorctl's `update`)."""
        before = list(self.apps)
        self.replacing = True  # the apps are stopped on purpose: `probe live` must not call it a failure
        self.save_state()
        try:
            self.replace_apps(before, generation)
        finally:
            self.replacing = False
        self.save_state()

    def replace_apps(self, before: list[str], generation: Generation) -> None:
        self.write_generation(generation)  # the apps of the generation, their patterns and markers
        for rt in self.apps.values():
            self.expect_new_app(rt)
            rt.given_up = ""
        self.supervisor.call("reloadConfig")
        self.stop_apps(before)
        for program in before:
            with contextlib.suppress(xmlrpc.client.Fault):  # already stopped (FATAL, BACKOFF) is fine
                self.supervisor.call("stopProcessGroup", program, True)
            with contextlib.suppress(xmlrpc.client.Fault):
                self.supervisor.call("removeProcessGroup", program)
        for program in self.apps:
            self.supervisor.call("addProcessGroup", program)

    def all_running(self, programs: list[str]) -> bool:
        """supervisord calls every one of them RUNNING (up for HEYGEM_START_SECONDS), as `probe ready` asks."""
        states = {i["name"]: i["statename"] for i in self.supervisor.call("getAllProcessInfo")}
        return all(states.get(p) == "RUNNING" for p in programs)

    def judge_trial(self) -> None:
        """A new generation on trial passes once every app is ready; past HEYGEM_RESTART_TIMEOUT it is rolled back."""
        if self.flow.trial is None:
            return  # nothing on trial: spare the readiness of every app on every wakeup
        apps = list(self.apps.values())
        ready = bool(apps) and all(rt.ready for rt in apps) and self.all_running([rt.program for rt in apps])
        verdict = self.flow.judge(ready, time.monotonic())
        if verdict == PASSED:
            self.flow.passed(self.generation)
            self.save_state()  # no longer restarting
        elif verdict is not None:
            self.rollback(verdict)

    def rollback(self, reason: str) -> None:
        previous = self.flow.failed(reason)
        failed = self.generation
        self.install(previous)
        for path in self.run.app_envs(failed):
            remove(path)
        self.flow.next()


def make_service(settings: Settings, flags: Mapping[str, str | None], fleet: FleetCheck) -> Service:
    return Service(settings, flags, fleet, os.environ, sys.stdout.buffer, sys.stderr)


def run_service(settings: Settings, flags: Mapping[str, str | None], fleet: FleetCheck) -> int:
    return make_service(settings, flags, fleet).serve()
