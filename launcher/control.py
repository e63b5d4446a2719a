"""Talking to supervisord over its unix socket (XML-RPC), with the credentials from the run dir."""

from __future__ import annotations

import http.client
import secrets
import xmlrpc.client
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from launcher.rundir import RunDir, read_json, write_json
from launcher.supervisor_config import Credentials

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


class Supervisor:
    """`call("getProcessInfo", "app")` -> supervisor.getProcessInfo("app"); reconnects after a failed call
    (the transport keeps one connection, which a failed request leaves unusable)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._proxy: xmlrpc.client.ServerProxy | None = None

    def _connect(self) -> xmlrpc.client.ServerProxy:
        data = read_json(self.run.credentials)
        if not isinstance(data, dict):
            raise OSError(f"no control credentials in {self.run.path}")
        transport = SupervisorTransport(data["username"], data["password"], data["serverurl"])
        # The host part is unused: the transport connects to the unix socket.
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def call(self, method: str, *args: Any) -> Any:
        if self._proxy is None:
            self._proxy = self._connect()
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except CALL_ERRORS:
            self._proxy = None
            raise
