"""Talking to supervisord over its unix socket (XML-RPC), with the credentials from the run dir."""

from __future__ import annotations

import http.client
import secrets
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from typing import Any

from launcher import exitcodes
from launcher.errors import LaunchError
from launcher.preflight.loaderenv import launcher_child_env
from launcher.service.supervisor_config import Credentials
from launcher.system import procs
from launcher.system.rundir import RunDir, read_json, write_json

# What a call can raise when supervisord is starting, stopping or gone.
CALL_ERRORS = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)


def new_credentials(run: RunDir) -> Credentials:
    """Fresh credentials for this start, kept 0600 in the run dir for `status` and `restart`."""
    credentials = Credentials("heygem", secrets.token_urlsafe(24))
    write_json(
        run.credentials,
        {"username": credentials.username, "password": credentials.password, "serverurl": f"unix://{run.socket}"},
    )
    return credentials


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket. supervisor.xmlrpc has one too, but importing it costs the
    long-running launcher ~5 MB of RSS (supervisor.compat and medusa); this is all that is needed."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path, self.timeout = path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # get_host_info turns user:password@ into the Authorization header sent with each request.
        _host, self._extra_headers, _x509 = self.get_host_info(host)
        # A connection per call: nothing to go stale between calls minutes apart.
        return _UnixConnection(self._path, self.timeout)


class NotAnswering(TimeoutError):
    """supervisord did not answer within the call's deadline: stopped (SIGSTOP), or stuck on a hung write."""


# What a call raises when supervisord does not answer or its socket is gone (the service asks again later).
UNANSWERED = (NotAnswering, ConnectionError, FileNotFoundError, http.client.HTTPException, xmlrpc.client.ProtocolError)
CALL_TIMEOUT = 2.0  # the service's calls: supervisord answers in milliseconds, and the loop must go on


class Supervisor:
    """`call("getProcessInfo", "app")` -> supervisor.getProcessInfo("app"); reconnects after a failed call
    (the transport keeps one connection, which a failed request leaves unusable). Every call has a deadline
    (`timeout`, or the call's own): past it, NotAnswering."""

    def __init__(self, run: RunDir, timeout: float = 30.0) -> None:
        self.run, self.timeout = run, timeout
        self._proxy: xmlrpc.client.ServerProxy | None = None
        self._transport: _UnixTransport | None = None

    def _connect(self) -> xmlrpc.client.ServerProxy:
        data = read_json(self.run.credentials)
        if not isinstance(data, dict):
            raise OSError(f"no control credentials in {self.run.path}")
        path = data["serverurl"].removeprefix("unix://")
        # user:password@ makes xmlrpc.client send HTTP basic auth; the host part is otherwise unused.
        url = f"http://{data['username']}:{data['password']}@localhost"
        self._transport = _UnixTransport(path, self.timeout)
        return xmlrpc.client.ServerProxy(url, transport=self._transport)

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        if self._proxy is None:
            self._proxy = self._connect()
        assert self._transport is not None
        self._transport.timeout = max(0.05, self.timeout if timeout is None else timeout)
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except TimeoutError:
            raise NotAnswering(
                f"supervisord did not answer {method} within {self._transport.timeout:.1f} s on {self.run.socket}"
            ) from None


SUPERVISORD_START_TIMEOUT = 15.0


def start_supervisord(run: RunDir, environ: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], Supervisor]:
    """supervisord with the run dir's config, once it answers RUNNING on its socket (seconds: at most
    SUPERVISORD_START_TIMEOUT). LaunchError (70) naming its log when it exits or does not answer in time."""
    # Its own session: tini's signals reach only us, and we stop the app in order. It dies with us.
    # Loader-safe and without our HEYGEM_* settings: supervisord and the app's wrapper (which runs in the
    # app dir) must not search the current directory for libraries, nor preload anything.
    proc = subprocess.Popen(
        # supervisord without OpenSSL, which it never uses (supervisord_main.py): ~4.5 MB less resident memory.
        [sys.executable, "-m", "launcher.service.supervisord_main", "-c", str(run.config)],
        stdin=subprocess.DEVNULL,
        env=launcher_child_env(environ),
        start_new_session=True,
        preexec_fn=procs.die_with_parent(),
    )
    supervisor = Supervisor(run, CALL_TIMEOUT)
    deadline = time.monotonic() + SUPERVISORD_START_TIMEOUT
    last_error: Exception | None = None
    while True:
        if proc.poll() is not None:
            raise LaunchError(
                f"supervisord exited at start ({proc.returncode}); see {run.supervisord_log}",
                exit_code=exitcodes.SOFTWARE,
            )
        try:
            if supervisor.call("getState")["statename"] == "RUNNING":
                break
        except (*CALL_ERRORS, NotAnswering) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise LaunchError(
                f"supervisord did not answer on {run.socket} in time: {last_error}",
                exit_code=exitcodes.SOFTWARE,
            )
        time.sleep(0.05)
    return proc, supervisor
