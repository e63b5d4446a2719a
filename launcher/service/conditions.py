"""What the loop meets besides the apps: a stop signal (its grace runs from its arrival), stray signals, a
supervisord that does not answer, a run dir removed under it. Each is named in one line; none is an
internal error, and none keeps a stop from ending within the grace."""

from __future__ import annotations

import signal
import time

from inotify_simple import INotify, flags

from launcher import exitcodes
from launcher.service.state import ServiceState
from launcher.system.rundir import RunDirGone
from launcher.system.signalinbox import stray_line

UNANSWERED_LIMIT = 120.0  # seconds supervisord may leave the loop unanswered before the service gives up
GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED
RUN_DIR_EVENTS = flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF


class Conditions(ServiceState):
    run_dir_watch: int | None = None

    def stop_on_signal(self, signum: int) -> int:
        name = signal.Signals(signum).name
        what = "the app" if self.fleet.single else f"the {len(self.apps)} apps"
        self.log(f"{name}: stopping {what} (grace {self.settings.stop_grace} s)")
        return self.stop(exitcodes.OK, since=self.inbox.arrived(signum) if self.inbox is not None else None)

    def say_stray(self, signals: set[int]) -> None:
        """One line per kind of stray signal in a wakeup (a burst of them is one line), nothing else."""
        for signum in sorted(signals - {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}):
            self.log(stray_line(signum))

    # -- supervisord not answering --------------------------------------------------------------------------
    def not_answering(self, exc: BaseException) -> int | None:
        """A call failed: the run dir is gone (stop), or supervisord does not answer (say so once, ask again
        at the next wakeup; give up after UNANSWERED_LIMIT)."""
        if self.run_dir_gone():
            raise RunDirGone(self.run.path)
        now = time.monotonic()
        if self.unanswered_since is None:
            self.unanswered_since = now
            self.log(
                f"supervisord does not answer ({type(exc).__name__}: {exc}); stopped, or stuck on a hung write? "
                "asking again; the apps are not supervised meanwhile"
            )
        elif now - self.unanswered_since > UNANSWERED_LIMIT:
            self.log(f"supervisord has not answered for {UNANSWERED_LIMIT:.0f} s")
            return self.stop(exitcodes.SOFTWARE)
        return None

    def answering(self) -> None:
        if self.unanswered_since is not None:
            self.log(f"supervisord answers again (after {time.monotonic() - self.unanswered_since:.1f} s)")
            self.unanswered_since = None

    # -- the run dir ------------------------------------------------------------------------------------
    def watch_run_dir(self, changes: INotify) -> None:
        """inotify says at once when the run dir itself is removed or moved (systemd-tmpfiles ageing /tmp)."""
        self.run_dir_watch = changes.add_watch(str(self.run.path), RUN_DIR_EVENTS)

    def check_run_dir(self, events: list) -> None:  # type: ignore[type-arg]
        if any(e.wd == self.run_dir_watch and e.mask & GONE for e in events) and self.run_dir_gone():
            raise RunDirGone(self.run.path)
