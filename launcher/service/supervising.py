"""Following each app through supervisord's states and the watchdog's incidents: a crash is counted against
its restart budget, an incident gets the cure the watchdog named, and an app that cannot go on is given up
(the whole service with HEYGEM_GPU_POLICY=all, that app alone with `any`)."""

from __future__ import annotations

import contextlib
import os
import time
import xmlrpc.client
from collections.abc import Mapping

from launcher import exitcodes
from launcher.service import exitpolicy
from launcher.service.appruntime import AppRuntime
from launcher.service.control import UNANSWERED
from launcher.service.restartwaits import RestartWaits
from launcher.system import procs
from launcher.watch.watchdog import GPU_FAULT, RECORD, RESTART, STOP, WARN, Incident

APP_PID_WAIT = 2.0  # the wrapper forks the app at once; this bounds the wait for its pid under load
EXIT_LINE_WAIT = 1.0  # supervisord logs how the app ended as it reaps it; this bounds the wait for that line


class AppSupervision(RestartWaits):
    def handle_incident(self, rt: AppRuntime, found: Incident) -> int | None:
        """Snapshot first, then the cure the watchdog named: restart the app, stop (CPU fallback: 69, a GPU fault:
        71), or only record (a failed task that ended). An exit code to stop with."""
        if found.action == RESTART and rt.deliberate:
            return None  # the app is being replaced already: the same episode, seen once more
        if rt.watch.stale(found):
            return None  # stamped before this process started: the old one's, read late
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
            if found.kind == GPU_FAULT:  # gpufaults.py: the line names the GPU, the fault and NVIDIA's action
                return self.give_up(rt, found.line, exitcodes.GPU_FAULT)
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
        # Waited for (as long as supervisord's own grace), so that what is described next is the stopped app;
        # one that does not answer is left to the final stop's sweep of its group.
        with contextlib.suppress(xmlrpc.client.Fault, *UNANSWERED):
            self.supervisor.call("stopProcess", rt.program, True, timeout=self.settings.stop_grace + 1)
        rt.forget_process()
        self.metrics.app_started(None, rt.program)
        self.save_state()
        return None

    def restart_app(self, rt: AppRuntime) -> None:
        """Stop the app's group (supervisord SIGKILLs it at the grace) and start it again once it is stopped and
        its backoff has passed; the wrapper clears the old group. In steps (`advance_restart`): a stop asked for
        meanwhile stops, it does not start the new app first."""
        self.expect_new_app(rt)
        delay = self.begin_wait(rt, stopped=False)
        if delay:
            self.log(f"{self.named(rt)}starts again in {delay:g} s (HEYGEM_RESTART_DELAY, doubled at each restart)")
        self.advance_restart(rt)

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
        if rt.pending_start:
            self.advance_restart(rt)
            return None
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
            if too_many:
                self.save_state()
                return rt.restarts.crashed_too_often(rt.last_exit, self.last_output(rt))
            self.after_crash(rt, state)
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
            rt.backoff.started(time.monotonic())
            self.save_state()
            if rt.deliberate:
                rt.deliberate = False
                if self.flow.trial is not None and self.flow.trial.app_pid is None:
                    self.flow.trial.app_pid = app
        return None

    def after_crash(self, rt: AppRuntime, state: str) -> None:
        """The app exited on its own: started again after its backoff. In BACKOFF supervisord is retrying a
        quick failure itself (HEYGEM_START_RETRIES, then FATAL): left to it."""
        if state != "EXITED":
            self.save_state()
            self.log(f"{self.named(rt)}exited ({rt.last_exit}); supervisord retries it")
            return
        delay = self.begin_wait(rt, stopped=True)
        self.save_state()
        self.log(f"{self.named(rt)}exited ({rt.last_exit}); started again in {delay:g} s")

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
