"""Health probes for Docker's HEALTHCHECK and Kubernetes exec probes: exit 0 pass, 1 fail, in well under a
second. They read the run dir's state and ask supervisord; they never run the preflight."""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from launcher.control import CALL_ERRORS, Supervisor
from launcher.rundir import RunDir, read_json, running_pid
from launcher.supervisor_config import PROGRAM

KINDS = ("live", "ready", "startup")
ANSWER_TIMEOUT = 0.5
ALIVE_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")  # supervisord is handling it


@dataclass(frozen=True)
class ProbeAnswer:
    kind: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{self.kind}: {'ok' if self.ok else 'FAIL'}: {self.reason}"


def _port_answers(port: int) -> bool:
    """HeyGem has no health endpoint, but `HEAD /` answers once Gradio is up."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_TIMEOUT)
    try:
        connection.request("HEAD", "/")
        return connection.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def probe(kind: str, run: RunDir) -> ProbeAnswer:
    def answer(ok: bool, reason: str) -> ProbeAnswer:
        return ProbeAnswer(kind, ok, reason)

    if running_pid(run) is None:
        return answer(False, f"heygem-launch is not running (run dir {run.path})")
    state = read_json(run.state) or {}
    try:
        info = Supervisor(run, timeout=ANSWER_TIMEOUT).call("getProcessInfo", PROGRAM)
    except CALL_ERRORS as exc:
        return answer(False, f"supervisord does not answer: {exc}")
    app_state = info["statename"]

    if kind == "live":
        # heygem-launch runs the watchdog in its own process: its pid being alive is the watchdog's.
        if app_state not in ALIVE_STATES:
            return answer(False, f"the app is {app_state}")
        return answer(True, f"heygem-launch, supervisord and the watchdog run; the app is {app_state}")

    if kind == "startup":
        preflight = state.get("preflight") or {}
        if not preflight.get("ok"):
            return answer(False, f"the preflight did not pass ({preflight.get('cause')})")
        if not state.get("app_started") or app_state != "RUNNING":
            return answer(False, f"the app has not started yet ({app_state})")
        return answer(True, "preflight passed and the app started")

    if app_state != "RUNNING":
        return answer(False, f"the app is {app_state}")
    if state.get("incident"):
        incident = state["incident"]
        return answer(False, f"incident open: {incident.get('kind')} ({incident.get('snapshot')})")
    if not state.get("ready"):
        missing = state.get("missing_markers") or []
        return answer(False, "not logged yet: " + "; ".join(missing) if missing else "the app is not ready yet")
    port = int(state.get("app_port") or 7860)
    if not _port_answers(port):
        return answer(False, f"port {port} does not answer")
    return answer(True, f"both workers up, port {port} answers, no incident")
