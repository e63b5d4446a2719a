"""The early probe: `--check-only`'s probe started in the launcher's first milliseconds, and kept only if it is
exactly the probe the full preflight would start.

Why: the probe (a python importing onnxruntime and running one inference) is the preflight's critical path,
and the full calculation of its environment (`appenv.prepare_environment`, over the settings' table) first
loads `dataclasses`, `pathlib` and the settings' modules: ~50 ms before the probe could start, a third of the
naive provider check's whole time. Here the common case (no `.env` file, no activate.d scripts, one app) is
computed with `envrules` (the same rules, on strings, importing only `os`) and the probe spawned at once.

Speculation, never a second authority: `probe.ProbeRun` adopts the early probe only when its interpreter,
provider, working directory and every environment variable equal what the full calculation gives; otherwise
it is killed and the right probe started (the cost is time, never a wrong answer). Whatever this module cannot
compute the same way it declines (None), and anything unusual is unusual enough: an `.env` file, a setting
beyond those below, an activate.d script, conda's env vars, HEYGEM_GPUS, an unsafe library folder.
"""

from __future__ import annotations

import os
import sys
import time

# signal's C core: the `signal` module's enums cost ~4 ms (enum) on the probe's critical path.
from _signal import (
    SIG_BLOCK,
    SIG_DFL,
    SIG_SETMASK,
    SIGALRM,
    SIGHUP,
    SIGINT,
    SIGKILL,
    SIGPIPE,
    SIGQUIT,
    SIGTERM,
    SIGUSR1,
    SIGUSR2,
    SIGXFSZ,
    getsignal,
    pthread_sigmask,
    signal,
)
from collections.abc import Mapping

from launcher.preflight import envrules
from launcher.preflight.loaderenv import safe_loader_env, strip_loader_variables

HERE = os.path.dirname(__file__)
CHILD = os.path.join(HERE, "probe_child.py")
MODEL = os.path.join(HERE, "data", "probe.onnx")
# Defaults of the settings the probe's inputs depend on: they must equal the settings' table
# (launcher/config/specs.py), which tests/preflight/test_early.py checks. A setting not named here does not
# reach the probe (HEYGEM_* stays out of the app's environment), except those that make this module decline.
DEFAULTS = {
    "HEYGEM_CONDA_ROOT": "/opt/conda",
    "HEYGEM_CONDA_ENV": "",
    "HEYGEM_APP_DIR": ".",
    "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider",
    "HEYGEM_PREFLIGHT": "run",
    "HEYGEM_SESSION_AUDIT": "on",
}
# Settings that change the probe's inputs in ways only the full calculation follows: set, they decline.
DECLINED = ("HEYGEM_ENV_FILE", "HEYGEM_EXTRA_LIBRARY_PATH", "HEYGEM_APP_PORT", "HEYGEM_GPUS")
PORT_VARIABLE, DEFAULT_PORT = "GRADIO_SERVER_PORT", 7860


class EarlyProbe:
    """A probe spawned before the settings were read: its process (in its own session, as every probe), the
    read end of its output, its report folder, and what it was started with."""

    def __init__(self, python: str, provider: str, env: dict[str, str], cwd: str) -> None:
        self.python, self.provider, self.env, self.cwd = python, provider, env, cwd
        old = os.getcwd()  # before anything is made: a launcher whose own folder is gone declines here
        self.folder = _report_folder()
        self.report = os.path.join(self.folder, "report.json")
        self.output, out_w = os.pipe()
        script_r, script_w = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, script_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)]
        try:
            _keep_fds_to_ourselves()
            os.chdir(cwd)  # posix_spawn has no cwd; the launcher has one thread now (start() checks)
            self.real_cwd = os.getcwd()  # where it runs, whatever a symlink on the way says later
            # subprocess.Popen's restore_signals: Python ignores SIGPIPE and SIGXFSZ, a child must not. No signal
            # blocked in it (start() blocks some here, until the probe is on record).
            self.pid = os.posix_spawn(
                python,
                [python, "-", self.report, MODEL, provider, self.folder],
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=(SIGPIPE, SIGXFSZ),
                setsigmask=(),
            )
        except BaseException:
            os.close(script_w)
            self.close_output()
            remove_folder(self.folder)
            raise
        finally:
            os.chdir(old)
            os.close(script_r)
            os.close(out_w)
        self.started = time.monotonic()
        try:
            with open(CHILD, "rb") as source:
                os.write(script_w, source.read())  # ~6 KB: fits the pipe's buffer, the child reads it at once
        except BrokenPipeError:
            pass  # its python died before reading: its output and exit code say why, as for any probe
        finally:
            os.close(script_w)

    def same(self, python: str, provider: str, env: Mapping[str, str], cwd: str) -> bool:
        """Whether this is the probe the full preflight would start: same interpreter, provider, working
        directory (as the probe sees it), and environment, variable for variable."""
        return (
            (python, provider) == (self.python, self.provider)
            and os.path.realpath(cwd) == self.real_cwd
            and dict(env) == self.env
        )

    def kill(self) -> None:
        """SIGKILL its group, collect it, remove its folder (idempotent)."""
        # try/except, not contextlib.suppress: contextlib costs ~2 ms of imports on the probe's critical path.
        try:  # noqa: SIM105
            os.killpg(self.pid, SIGKILL)
        except ProcessLookupError:
            pass
        try:  # noqa: SIM105
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # collected already
        self.close_output()
        remove_folder(self.folder)

    def close_output(self) -> None:
        """Close the read end of its output once (the number may be reused after)."""
        if self.output >= 0:
            os.close(self.output)
            self.output = -1


def remove_folder(folder: str) -> None:
    """The report folder and whatever the probe left in it. shutil.rmtree, as TemporaryDirectory does: it works
    through directory fds and refuses a symlink, so a folder swapped for a link in a TMPDIR that others can write
    never makes it delete elsewhere. Imported here: cleanup is off the probe's critical path."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _keep_fds_to_ourselves() -> None:
    """Every inherited fd above 2 not inherited by the probe (subprocess.Popen's close_fds): what the shell
    handed the launcher (`3</etc/x`, a harness's pipe) is not the probe's."""
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:  # noqa: SIM105 - contextlib costs ~2 ms of imports on the probe's critical path
                os.set_inheritable(int(name), False)
            except OSError:
                pass  # the listing's own fd, closed by now


def _report_folder() -> str:
    """A new private folder where tempfile would make it (TMPDIR when it is a folder, else /tmp)."""
    base = os.environ.get("TMPDIR", "")
    base = base if base.startswith("/") and os.path.isdir(base) else "/tmp"
    folder = os.path.join(base, f"heygem-probe-{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(folder, 0o700)
    return folder


_STARTED: list[EarlyProbe] = []


def start(flags: Mapping[str, str], environ: Mapping[str, str]) -> None:
    """Start the early probe for `--check-only` with these setting flags, when this module can compute its
    inputs the way the full preflight does; else nothing. Never raises but KeyboardInterrupt: a failure here only
    costs time. Signals that would end the launcher before the check handles them are blocked until the probe is
    on record, so that none lands between its spawn and `discard()` knowing of it."""
    if "threading" in sys.modules and sys.modules["threading"].active_count() > 1:
        return  # os.chdir around the spawn would move other threads too
    try:
        inputs = probe_inputs(flags, environ, os.getcwd())
    except Exception:  # declined: the full preflight computes and reports everything itself
        return
    if inputs is None:
        return
    old_mask = pthread_sigmask(SIG_BLOCK, (SIGINT, *DEADLY, *STRAY))
    try:
        for signum, handler in [(s, _die_without_probe) for s in DEADLY] + [(s, _stray) for s in STRAY]:
            if getsignal(signum) == SIG_DFL:  # an ignored one (nohup) stays ignored
                signal(signum, handler)
        _STARTED.append(EarlyProbe(*inputs))
    except Exception:
        return
    finally:
        pthread_sigmask(SIG_SETMASK, old_mask)  # what came meanwhile lands now, with the probe on record


# Until commands/check.py's interruptible() takes over: SIGTERM and SIGHUP end the launcher as their default
# action would, without leaving the probe (in its own session) behind; the stray signals are said and ignored,
# as interruptible() and the service do. SIGINT is Python's KeyboardInterrupt, which unwinds to discard().
DEADLY = (SIGTERM, SIGHUP)
STRAY = (SIGUSR1, SIGUSR2, SIGQUIT, SIGALRM)  # system/signalinbox.py's STRAY, without its enums


def _die_without_probe(signum: int, _frame: object) -> None:
    """Kill the early probe, then die of the signal as the launcher would have without a handler."""
    discard()
    signal(signum, SIG_DFL)
    os.kill(os.getpid(), signum)


def _stray(signum: int, _frame: object) -> None:
    from launcher.system.signalinbox import stray_line

    try:  # noqa: SIM105 - one line, whatever state sys.stderr's buffer is in
        os.write(2, f"heygem-launch: {stray_line(signum)}\n".encode())
    except OSError:
        pass


def claim(python: str, provider: str, env: Mapping[str, str], cwd: str) -> EarlyProbe | None:
    """The early probe, handed over, when it is the one asked for; a different one is killed. None either way
    when there was none."""
    if not _STARTED:
        return None
    early = _STARTED.pop()
    if early.same(python, provider, env, cwd):
        return early
    early.kill()
    return None


def pending() -> bool:
    """Whether an early probe runs, not yet claimed."""
    return bool(_STARTED)


def discard() -> None:
    """Kill an early probe nobody claimed (the preflight refused before it started one, or was interrupted)."""
    while _STARTED:
        _STARTED.pop().kill()


def _setting(key: str, flags: Mapping[str, str], environ: Mapping[str, str]) -> str:
    # The layers without a `.env` file (probe_inputs declines when there is one): flag, environment, default.
    return flags[key] if key in flags else environ.get(key, DEFAULTS.get(key, ""))


def _clean(path: str) -> bool:
    """An absolute path that pathlib keeps as written, so that both calculations name it alike."""
    return path.startswith("/") and "//" not in path and "/./" not in path and not path.endswith(("/", "/."))


def conda_prefix(conda_env: str, conda_root: str) -> tuple[str, str, str, bool] | None:
    """(prefix, name, python, is_conda) as `conda.resolve_prefix` finds them, for a clean absolute path, a name
    or '' (the launcher's own interpreter); None for anything else, or an env that is not there."""
    if not conda_env:
        prefix, name, python = sys.prefix, os.path.basename(sys.prefix), sys.executable
    else:
        if not _clean(conda_root) or "\n" in conda_env:
            return None
        envs = os.path.join(conda_root, "envs")
        if "/" in conda_env:
            if not _clean(conda_env):
                return None
            prefix, name = conda_env, conda_env
            if os.path.dirname(prefix) == envs:
                name = os.path.basename(prefix)
            elif prefix == conda_root:
                name = "base"
        elif conda_env == "base":
            prefix, name = conda_root, "base"
        else:
            prefix, name = os.path.join(envs, conda_env), conda_env
        found = [p for n in ("python", "python3") if os.path.exists(p := os.path.join(prefix, "bin", n))]
        if not os.path.isdir(prefix) or not found:
            return None
        python = found[0]
    return prefix, name, python, os.path.isdir(os.path.join(prefix, "conda-meta"))


def _activate_d(prefix: str) -> bool:
    folder = os.path.join(prefix, "etc", "conda", "activate.d")
    return os.path.isdir(folder) and any(name.endswith(".sh") for name in os.listdir(folder))


def _utf8(env: Mapping[str, str]) -> bool:
    """Whether every variable can be carried to the app (else the full calculation refuses, naming it)."""
    try:
        for key, value in env.items():
            (key + value).encode()
    except UnicodeEncodeError:
        return False
    return not any("\0" in key + value for key, value in env.items())


def probe_inputs(
    flags: Mapping[str, str], environ: Mapping[str, str], cwd: str
) -> tuple[str, str, dict[str, str], str] | None:
    """Pure but for looks at the disk: (python, provider, environment, working directory) of the probe, as
    `appenv.prepare_environment` and `preflight.run_preflight` compute them, in the common case; else None."""

    def get(key: str) -> str:
        return _setting(key, flags, environ)

    if any(get(key) for key in DECLINED) or os.path.lexists(os.path.join(cwd, ".env")):
        return None
    if get("HEYGEM_APP_DIR").startswith("~"):
        return None
    provider, app_dir = get("HEYGEM_REQUIRE_PROVIDER"), get("HEYGEM_APP_DIR")
    if get("HEYGEM_PREFLIGHT") != "run" or get("HEYGEM_SESSION_AUDIT") not in ("on", "off"):
        return None
    if not (provider.endswith("ExecutionProvider") and provider.isascii() and provider.isalnum()):
        return None
    found = conda_prefix(get("HEYGEM_CONDA_ENV"), get("HEYGEM_CONDA_ROOT"))
    if found is None or not _utf8(environ) or not os.path.isdir(os.path.join(cwd, app_dir)):
        return None
    prefix, name, python, is_conda = found
    if is_conda and (os.path.exists(os.path.join(prefix, "conda-meta", "state")) or _activate_d(prefix)):
        return None
    base = {k: v for k, v in environ.items() if not k.startswith(envrules.OWN_PREFIX)}
    base, _warnings = safe_loader_env(base, strict=True)  # ConfigError: declined (start() catches it)
    env, _removed = strip_loader_variables(envrules.activation_env(base, prefix, name, is_conda, {}))
    env.pop(envrules.ORT_KILL_SWITCH, None)
    env.pop(envrules.AUDIT_SOCKET_VARIABLE, None)  # the probe runs without it (preflight/check.py)
    inherited = env.get("LD_LIBRARY_PATH", "").split(":")
    groups = [[os.path.join(prefix, "lib")], envrules.nvidia_wheel_dirs(prefix), inherited]
    entries = [entry for entry in envrules.merge_entries(groups)[0] if os.path.isdir(entry)]
    if any(envrules.unsafe_folder(entry) for entry in entries):
        return None  # the full calculation refuses it, with its reason
    if entries:
        env["LD_LIBRARY_PATH"] = ":".join(entries)
    else:
        env.pop("LD_LIBRARY_PATH", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if get("HEYGEM_SESSION_AUDIT") == "on":
        env["PYTHONPATH"] = envrules.audit_pythonpath(env.get("PYTHONPATH", ""), envrules.AUDIT_DIR)
    port = env.get(PORT_VARIABLE, "")
    valid = port.isascii() and port.isdigit() and 0 < int(port) < 65536
    env[PORT_VARIABLE] = str(int(port)) if valid else str(DEFAULT_PORT)
    return python, provider, env, os.path.join(cwd, app_dir) if app_dir else cwd
