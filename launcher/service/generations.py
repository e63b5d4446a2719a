"""A new generation of the apps (settings, environment files, supervisord's config) and, after a restart's
preflight, its trial: installed while the flow (restarting.py) times it, passed once every app is ready,
rolled back to the previous generation otherwise."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import xmlrpc.client
from dataclasses import replace

from launcher.config.settings import Settings
from launcher.errors import ConfigError, LaunchError
from launcher.preflight.fleet import FleetCheck
from launcher.service.metricserving import MetricsServing
from launcher.service.restarting import PASSED, Generation
from launcher.service.startchecks import metrics_clash
from launcher.service.supervisor_config import AppProgram, render
from launcher.system import ports
from launcher.system.rundir import (
    remove,
    write_json,
    write_private,
)


class Generations(MetricsServing):
    # -- a generation's files ---------------------------------------------------------------------------
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

    def check_metrics_port(self, fleet: FleetCheck, settings: Settings) -> None:
        """The metrics server must not take an app's port (`startchecks.metrics_clash`): ConfigError (78).
        `settings`: the generation's own (a restart's new ones, not the running ones)."""
        clash = metrics_clash(settings.metrics_port, [member.instance for member in fleet.running])
        if clash:
            raise ConfigError(clash)

    # -- restart after a config change (restarting.py holds the flow) ----------------------------------
    def finish_restart(self, outcome) -> None:  # type: ignore[no-untyped-def]
        """The restart's preflight is done: refuse (the apps untouched), or install the new generation on trial."""
        if outcome.error is None and outcome.check is not None:
            ours = {rt.port for rt in self.apps.values()}
            try:
                assert outcome.settings is not None
                self.check_metrics_port(outcome.check, outcome.settings)
                for member in outcome.check.running:
                    if member.check.app.port not in ours:
                        ports.check_free(member.check.app.port)  # a move onto a busy port: Gradio would go elsewhere
                self.move_metrics(outcome.settings)  # last: a refusal after it would leave it moved
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
        self.check_stop_requested()  # a SIGTERM during the replacement: nothing new is started
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
        self.move_metrics(previous.settings, refuse=False)
        self.install(previous)
        for path in self.run.app_envs(failed):
            remove(path)
        self.flow.next()
