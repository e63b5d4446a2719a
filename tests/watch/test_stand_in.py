"""The stand-in app against the real thing: a stand-in encodes beliefs, so each of its beliefs is checked
against what HeyGem really writes (tests/scenarios/heygem-replay,
built from HeyGem's source and real log).

- every record the stand-in writes has the shape (file, line, level, message with codes and numbers
  blanked) of a record in the real logs, except the few listed below, each with its reason;
- every record arrives twice, in the log file with milliseconds and on stderr without;
- Gradio's URL is a print, held by a pipe without PYTHONUNBUFFERED (lost on SIGTERM), never in the log;
- replayed, the stand-in's own streams reach the outcome the stand-in says each task had.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from launcher.watch.heygem_log import parse_record
from tests.conftest import LAUNCH, clean_environ
from tests.harness import APP, free_port, get, wait_for
from tests.scenarios import HEYGEM_REPLAY as SCENARIOS

# Records the stand-in writes that the shared scenarios happen not to hold, and why they are still HeyGem's.
NOT_IN_SCENARIOS = {
    ("app.py", 210, "ERROR", "[<c>]音频特征提取失败，异常信息:[…]"): "FIELD.md section 2 lists it among the failures",
}
TASKS = [
    {"code": "t-ok", "frames": 40, "fps": 200, "encode": 0.2},
    {"code": "t-pp", "frames": 20, "fps": 200, "encode": 0.2, "pingpong": 1},
    {"code": "t-fail", "kind": "fail"},
    {"code": "t-oom", "kind": "writer-fail", "frames": 40, "fps": 200},
    {"code": "t-user", "frames": 8, "fps": 200, "encode": 0.1, "audio": "./temp/队列满_试听.wav"},
    {"code": "t-block", "kind": "blocked", "frames": 60},
]


def shape(record_line: str, codes: set[str]) -> tuple[str, int, str, str] | None:
    record = parse_record(record_line)
    if record is None:
        return None
    message = record.message
    for code in codes:
        message = message.replace(code, "<c>")
    message = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<c>", message)
    message = re.sub(r"(异常信息|异常原因|失败原因):\[.*\]$", r"\1:[…]", message)
    message = re.sub(r"\d+(\.\d+)?", "N", message)
    message = re.sub(r"\./temp/[^ ]+\.wav", "./temp/A.wav", message)
    return (record.file, record.lineno, record.level, message)


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The stand-in run once, alone (no launcher), with every kind of task, as a pipe would capture it."""
    folder = tmp_path_factory.mktemp("stand-in")
    port = free_port()
    env = clean_environ(GRADIO_SERVER_PORT=str(port), TEST_APP_SPEED="30")
    env.pop("PYTHONUNBUFFERED", None)  # as HeyGem's image had it: prints held under a pipe
    with (folder / "stdout.log").open("wb") as out, (folder / "stderr.log").open("wb") as err:
        # Its own session, so that its spawned workers go with it (as with HeyGem, SIGTERM to the main
        # process alone leaves them running).
        app = subprocess.Popen(
            [sys.executable, str(APP)], cwd=folder, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            wait_for(lambda: get(port) is not None, 20, "the stand-in")
            wait_for(lambda: "数字人图片处理进程启动" in (folder / "log" / "dh.log").read_text(), 20, "its workers")
            for task in TASKS:
                assert get(port, "/task?" + urlencode(task)) is not None
            log = folder / "log" / "dh.log"
            wait_for(lambda: "[t-block]任务视频驱动队列满" in log.read_text(), 30, "the tasks, the last one blocked")
            time.sleep(0.5)
            before_exit = (folder / "stdout.log").read_text()
            listening = listen_addresses(port)
            states = {t["code"]: t["state"] for t in get(port, "/tasks")}  # type: ignore[union-attr]
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(app.pid, signal.SIGKILL)  # the workers
    return {"folder": folder, "states": states, "stdout_before_exit": before_exit, "listening": listening}


def listen_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(address)
    return found


def test_it_listens_on_every_interface_as_app_py_does(streams: dict[str, object]) -> None:
    """HeyGem's app.py sets GRADIO_SERVER_NAME=0.0.0.0: a published container port reaches it (FIELD.md s. 2)."""
    assert streams["listening"] == {"00000000"}


def real_shapes() -> set[tuple[str, int, str, str]]:
    shapes = set()
    for log in SCENARIOS.glob("*/dh.log"):
        for line in log.read_text().splitlines():
            found = shape(line, set())
            if found:
                shapes.add(found)
    return shapes


def test_every_record_has_the_shape_of_a_real_one(streams: dict[str, object]) -> None:
    folder = streams["folder"]
    assert isinstance(folder, Path)
    codes = {t["code"] for t in TASKS}  # type: ignore[misc]
    real = real_shapes()
    ours = {s for line in (folder / "log" / "dh.log").read_text().splitlines() if (s := shape(line, codes))}
    unknown = sorted(s for s in ours - real if s not in NOT_IN_SCENARIOS)
    assert not unknown, "the stand-in writes records HeyGem does not:\n" + "\n".join(map(str, unknown))
    assert len(ours) >= 20


def test_every_record_arrives_twice_with_two_timestamp_formats(streams: dict[str, object]) -> None:
    folder = streams["folder"]
    assert isinstance(folder, Path)
    logged = [parse_record(line) for line in (folder / "log" / "dh.log").read_text().splitlines()]
    printed = [parse_record(line) for line in (folder / "stderr.log").read_text().splitlines()]
    logged_keys = sorted(r.key(10_000) for r in logged if r)
    assert logged_keys == sorted(r.key(10_000) for r in printed if r)
    assert all(r and r.precise for r in logged) and not any(r and r.precise for r in printed)


def test_gradios_url_is_a_print_that_a_pipe_holds(streams: dict[str, object]) -> None:
    folder = streams["folder"]
    assert isinstance(folder, Path)
    # (multiprocessing flushes stdout when it spawns the workers: what was printed before that arrives early.)
    assert "Running on local URL" not in str(streams["stdout_before_exit"])
    # Killed by SIGTERM (Python's default action), the app never even flushes it.
    assert "Running on local URL" not in (folder / "stdout.log").read_text()
    assert "Running on local URL" not in (folder / "log" / "dh.log").read_text()


def test_replayed_the_stand_in_reaches_its_own_outcomes(streams: dict[str, object]) -> None:
    folder = streams["folder"]
    assert isinstance(folder, Path)
    run = subprocess.run(
        [*LAUNCH, "replay", str(folder / "log" / "dh.log"), "--stderr", str(folder / "stderr.log"), "--json"],
        env=clean_environ(),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(run.stdout)
    assert got["ready"] is True
    assert {t["code"]: t["outcome"] for t in got["tasks"]} == streams["states"]
    assert [(i["kind"], i["code"]) for i in got["incidents"]] == [
        ("task_failed", "t-fail"),
        ("task_failed", "t-oom"),
        ("blocked", "t-block"),
    ]
