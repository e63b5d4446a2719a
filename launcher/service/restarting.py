"""The restart flow after a config change (SIGHUP, `heygem-launch restart`): read the settings anew (with the
client's flags), preflight them in a thread while the old app keeps serving, and only on pass replace the
app; then give the new app HEYGEM_RESTART_TIMEOUT seconds to become ready, and roll back to the previous
generation if it exits, goes FATAL or is not ready by then. Every request gets one answer in
`RUN_DIR/restart.json`, with the request's id."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher import exitcodes
from launcher.config.settings import Settings, load_settings
from launcher.errors import LaunchError
from launcher.preflight.fleet import FleetCheck, fleet_preflight
from launcher.preflight.report import render_fleet
from launcher.system.rundir import RunDir, read_json, remove, write_json

PASSED = "passed"


@dataclass(frozen=True)
class Generation:
    """One app configuration: its number (and env file), its settings and the preflight it passed."""

    number: int
    settings: Settings
    check: FleetCheck


@dataclass(frozen=True)
class Request:
    requested_at: float
    id: str | None = None  # set by `heygem-launch restart`; a bare SIGHUP has none
    flags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    request: Request
    settings: Settings | None = None
    check: FleetCheck | None = None
    error: LaunchError | None = None


@dataclass
class Trial:
    """A new generation on probation: ready by `deadline`, or the previous one comes back."""

    request: Request
    previous: Generation
    deadline: float
    timeout: float
    result: dict[str, Any]
    app_pid: int | None = None


def read_requests(run: RunDir, now: float) -> list[Request]:
    """The clients' request files (each with its id and flags), consumed, oldest first; one bare request when
    there is none (a SIGHUP from `docker kill -s HUP`). One file per request: two clients never overwrite
    each other's."""
    requests = []
    for path in sorted(run.restart_requests(), key=_mtime):
        data = read_json(path)
        remove(path)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            continue
        flags = data.get("flags") if isinstance(data.get("flags"), dict) else {}
        clean = {str(k): str(v) for k, v in flags.items() if isinstance(v, str)}
        requests.append(Request(now, data["id"], clean))
    return requests or [Request(now)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class RestartFlow:
    """Owned by the service loop, which installs the generations it decides on (or rolls back to)."""

    def __init__(
        self,
        run: RunDir,
        flags: Mapping[str, str | None],
        environ: Mapping[str, str],
        wake: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.run, self.flags, self.environ, self.wake, self.log = run, dict(flags), dict(environ), wake, log
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restart")
        self.future: Future[Outcome] | None = None
        self.queue: deque[Request] = deque()
        self.trial: Trial | None = None

    # -- requests -------------------------------------------------------------------------------------
    def request(self, now: float) -> None:
        """Queue the requests behind a SIGHUP. Bare SIGHUPs are coalesced: one already waiting (not yet
        started) reads the settings anew when its turn comes, so a burst (a config reloader firing per file
        event) is one or two restarts, not one each; a `restart` client's request keeps its own answer."""
        for request in read_requests(self.run, now):
            if request.id is None and any(queued.id is None for queued in self.queue):
                continue
            self.queue.append(request)
        self.next()

    def busy(self) -> bool:
        return self.future is not None or self.trial is not None

    def next(self) -> None:
        if self.busy() or not self.queue:
            return
        request = self.queue.popleft()
        self.log("restart requested: reading the settings and .env anew, preflight while the app keeps serving")
        self.future = self.executor.submit(self._preflight, request)
        self.future.add_done_callback(lambda _f: self.wake())

    def _preflight(self, request: Request) -> Outcome:
        """In the thread: never raises, so that a bad value can never take the service down."""
        try:
            settings = load_settings({**self.flags, **request.flags}, self.environ)
            # The run dir holds the running service's socket: it cannot move while it runs.
            settings = replace(settings, run_dir=self.run.path)
            return Outcome(request, settings, fleet_preflight(settings, self.environ))
        except LaunchError as exc:
            return Outcome(request, error=exc)
        except Exception as exc:  # a bug of ours: answered, and the app keeps running
            error = LaunchError(f"internal error during the restart: {type(exc).__name__}: {exc}")
            return Outcome(request, error=error)

    def preflight_done(self) -> Outcome | None:
        """The finished preflight's outcome, once; None while it runs."""
        if self.future is None or not self.future.done():
            return None
        outcome, self.future = self.future.result(), None
        return outcome

    # -- answers --------------------------------------------------------------------------------------
    def answer(self, request: Request, **result: Any) -> None:
        document = {"id": request.id, "requested_at": request.requested_at, "finished_at": time.time(), **result}
        write_json(self.run.restart_result, document)

    def refuse(self, outcome: Outcome) -> None:
        """The new settings are invalid or the preflight refused them: the running app is untouched."""
        if outcome.error is not None:
            self.log(f"restart refused: {outcome.error}; the app keeps running")
            self.answer(outcome.request, ok=False, exit_code=outcome.error.exit_code, message=str(outcome.error))
            return
        assert outcome.check is not None
        verdict = outcome.check.verdict
        self.log(f"restart refused by the preflight ({verdict.cause}); the app keeps running")
        self.answer(
            outcome.request,
            ok=False,
            exit_code=exitcodes.UNAVAILABLE,
            message=f"refused [{verdict.cause}]: {verdict.message}",
            check=outcome.check.as_dict(),
            report=render_fleet(outcome.check),
        )

    def start_trial(self, outcome: Outcome, previous: Generation, timeout: float) -> None:
        assert outcome.check is not None
        result = {"check": outcome.check.as_dict(), "report": render_fleet(outcome.check)}
        self.trial = Trial(outcome.request, previous, time.monotonic() + timeout, timeout, result)

    def deadline_in(self) -> float | None:
        """Seconds until the trial's deadline (for select()), or None."""
        return None if self.trial is None else max(0.0, self.trial.deadline - time.monotonic())

    def judge(self, ready: bool, now: float) -> str | None:
        """PASSED once the new app is ready; the reason to roll back once HEYGEM_RESTART_TIMEOUT has passed
        (`now` on the monotonic clock); None while on trial, or when there is no trial."""
        trial = self.trial
        if trial is None:
            return None
        if ready:
            return PASSED
        if now >= trial.deadline:
            return f"the new app was not ready within HEYGEM_RESTART_TIMEOUT={trial.timeout:g} s"
        return None

    def passed(self, generation: int) -> None:
        """The new app is ready: the restart is done."""
        assert self.trial is not None
        trial, self.trial = self.trial, None
        app_pid = trial.app_pid
        for old in range(1, generation):
            for path in self.run.app_envs(old):
                remove(path)
        shown = f"pid {app_pid}, " if app_pid else ""
        message = f"app restarted with the new environment ({shown}generation {generation}); it is ready"
        self.log(message)
        self.answer(trial.request, ok=True, exit_code=exitcodes.OK, message=message, app_pid=app_pid, **trial.result)
        self.next()

    def failed(self, reason: str) -> Generation:
        """The new app did not come up: answer 69 with the reason; the caller reinstalls the returned
        previous generation."""
        assert self.trial is not None
        trial, self.trial = self.trial, None
        previous = trial.previous
        message = f"restart rolled back: {reason}; the previous app (generation {previous.number}) is started again"
        self.log(message)
        self.answer(
            trial.request, ok=False, exit_code=exitcodes.UNAVAILABLE, message=message, rolled_back=True, **trial.result
        )
        return previous

    def stop(self) -> None:
        """The service stops: answer whatever is pending, so no client waits for nothing."""
        pending = list(self.queue)
        if self.trial is not None:
            pending.append(self.trial.request)
            self.trial = None
        self.queue.clear()
        for request in pending:
            self.answer(request, ok=False, exit_code=exitcodes.UNAVAILABLE, message="heygem-launch is stopping")
        self.executor.shutdown(wait=False, cancel_futures=True)


def new_request_id() -> str:
    return os.urandom(8).hex()
