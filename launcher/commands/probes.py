"""Health probes for Docker's HEALTHCHECK and Kubernetes exec probes: exit 0 pass, 1 fail, in well under a
second. They read the run dir's state and ask supervisord; they never run the preflight."""

from __future__ import annotations

import http.client
import json
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.config.instances import policy_met
from launcher.service.control import CALL_ERRORS, Supervisor
from launcher.service.supervisor_config import PROGRAM
from launcher.system.rundir import RunDir, read_json, running_pid

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


def _api_answers(port: int, api: object) -> bool:
    """HeyGem has no health endpoint. The Hack's Gradio answers `HEAD /`; HeyGem.ai's Flask answers
    `GET /easy/query?code=…` with its JSON (10004, no such task) as soon as it listens: with the markers, that
    is readiness (its answer alone is not: it answers while the workers are dead, #471, #526)."""
    method, path = api if isinstance(api, list) and len(api) == 2 else ("HEAD", "/")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_TIMEOUT)
    try:
        connection.request(str(method), str(path))
        response = connection.getresponse()
        if method == "HEAD":
            return response.status < 500
        return response.status == 200 and "code" in json.loads(response.read(65536) or b"{}")
    except (OSError, http.client.HTTPException, ValueError, TypeError):
        return False
    finally:
        connection.close()


def _apps(state: dict[str, object]) -> tuple[list[dict[str, object]], list[str]]:
    """The apps the state file lists (a run dir of an older launcher has one, named `app`), and the ones
    given up (HEYGEM_GPU_POLICY=any) apart, each as `program (why)`."""
    listed = state.get("instances")
    if not isinstance(listed, list) or not listed:
        return [{**state, "program": PROGRAM}], []
    apps = [a for a in listed if isinstance(a, dict)]
    gone = [f"{a.get('program')} ({a.get('given_up')})" for a in apps if a.get("given_up")]
    return [a for a in apps if not a.get("given_up")], gone


def preflight_result(preflight: Mapping[str, object]) -> str:
    """A state file's preflight as one word: passed, refused or skipped (a launcher before `result` wrote
    only `ok`)."""
    return str(preflight.get("result") or ("passed" if preflight.get("ok") else "refused"))


def probe(kind: str, run: RunDir) -> ProbeAnswer:
    """Docker's and Kubernetes' probe: every app must pass, or with HEYGEM_GPU_POLICY=any at least one."""
    if running_pid(run) is None:
        return ProbeAnswer(kind, False, f"heygem-launch is not running (run dir {run.path})")
    state = read_json(run.state) or {}
    apps, gone = _apps(state)
    given_up = f"; given up: {', '.join(gone)}" if gone else ""
    if not apps:
        return ProbeAnswer(kind, False, f"no app runs{given_up}")
    if kind == "live" and state.get("restarting"):
        # A restart after a config change replaces the apps; the launcher is alive and doing it.
        return ProbeAnswer(kind, True, f"heygem-launch runs and is restarting the apps{given_up}")
    supervisor = Supervisor(run, timeout=ANSWER_TIMEOUT)
    answers = []
    for app in apps:
        try:
            info = supervisor.call("getProcessInfo", str(app.get("program") or PROGRAM))
        except xmlrpc.client.Fault as exc:  # BAD_NAME: the app's group is being replaced right now
            answers.append(ProbeAnswer(kind, kind == "live", f"being replaced ({exc.faultString})"))
            continue
        except CALL_ERRORS as exc:
            return ProbeAnswer(kind, False, f"supervisord does not answer: {exc}")
        answers.append(_one(kind, state, app, info["statename"]))
    if len(answers) == 1 and not gone:
        return answers[0]
    named = [f"{app.get('program')}: {a.reason}" for app, a in zip(apps, answers, strict=True)]
    passed = [a for a in answers if a.ok]
    any_policy = state.get("gpu_policy") == "any"
    ok = policy_met(state.get("gpu_policy"), [a.ok for a in answers])
    rule = "HEYGEM_GPU_POLICY=any: one is enough" if any_policy else "all must pass"
    total = len(answers) + len(gone)
    return ProbeAnswer(kind, ok, f"{len(passed)} of {total} apps pass ({rule}); " + "; ".join(named) + given_up)


def _one(kind: str, state: dict[str, object], app: dict[str, object], app_state: str) -> ProbeAnswer:
    def answer(ok: bool, reason: str) -> ProbeAnswer:
        return ProbeAnswer(kind, ok, reason)

    if kind == "live":
        # heygem-launch runs the watchdog in its own process: its pid being alive is the watchdog's.
        if app_state not in ALIVE_STATES:
            return answer(False, f"the app is {app_state}")
        return answer(True, f"heygem-launch, supervisord and the watchdog run; the app is {app_state}")

    if kind == "startup":
        preflight = state.get("preflight") or {}
        assert isinstance(preflight, dict)
        result = preflight_result(preflight)
        if result == "refused":
            return answer(False, f"the preflight did not pass ({preflight.get('cause')})")
        if not app.get("app_started") or app_state != "RUNNING":
            return answer(False, f"the app has not started yet ({app_state})")
        # Skipped on purpose (HEYGEM_PREFLIGHT=skip): the app is meant to start, but nothing was proven.
        how = "skipped (HEYGEM_PREFLIGHT=skip)" if result == "skipped" else "passed"
        return answer(True, f"preflight {how} and the app started")

    # Not while STARTING: supervisord has not yet seen it up for HEYGEM_START_SECONDS, and `status` calls it
    # ready only once RUNNING too.
    if app_state != "RUNNING":
        return answer(False, f"the app is {app_state}")
    incident = app.get("incident")
    if isinstance(incident, dict):
        return answer(False, f"incident open: {incident.get('kind')} ({incident.get('snapshot')})")
    if not app.get("ready"):
        missing = app.get("missing_markers") or []
        assert isinstance(missing, list)
        return answer(False, "not logged yet: " + "; ".join(missing) if missing else "the app is not ready yet")
    port = int(str(app.get("app_port") or app.get("port") or 7860))
    api = app.get("api")
    asked = " ".join(map(str, api)) if isinstance(api, list) else "HEAD /"
    if not _api_answers(port, api):
        return answer(False, f"port {port} does not answer {asked}")
    return answer(True, f"every worker marker logged, port {port} answers {asked}, no incident")
