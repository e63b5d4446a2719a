"""The gen-video stand-in (tests/gen_video_like_app.py) writes what HeyGem.ai's image writes: every record it logs
in a start, a task that ends and a task HeyGem gives up on has the shape (file, line, level, message with the code
and numbers masked) of a record in tests/scenarios/duix-replay, and its access lines are werkzeug's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from launcher.watch.heygem_log import parse_record
from tests.harness import free_port, wait_for
from tests.scenarios import DUIX_REPLAY

APP = Path(__file__).resolve().parent.parent / "gen_video_like_app.py"
ACCESS = re.compile(
    r'^\d+\.\d+\.\d+\.\d+ - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "(GET|POST) \S+ HTTP/1\.1" 200 -$'
)


def shape(line: str, codes: list[str]) -> tuple[str, int, str, str] | None:
    record = parse_record(line)
    if record is None or record.dialect != "B":
        return None
    message = record.message
    for code in codes:
        message = message.replace(code, "<c>")
    message = re.sub(r"(audio_url|video_url):[^,]*", r"\1:…", message)  # the caller's file names
    message = re.sub(r"\[[^\]]*\]", "[…]", message)  # pids, file names, video_info's figures
    message = re.sub(r"\d+(\.\d+)?", "N", message)
    return record.file, record.lineno, record.level, message


def scenario_shapes() -> set[tuple[str, int, str, str]]:
    found = set()
    for log in DUIX_REPLAY.glob("*-b-*/container.log"):
        expected = json.loads((log.parent / "expected.json").read_text())
        codes = [t["code"] for t in expected["tasks"]]
        found |= {s for line in log.read_text().splitlines() if (s := shape(line, codes))}
    return found


def test_every_record_of_the_stand_in_is_one_the_real_service_writes(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.ini").write_text(f"[http_server]\nserver_port = {port}\n")
    env = {**os.environ, "TEST_APP_SPEED": "50", "TEST_GENVIDEO_TIMEOUT": "50", "PYTHONUNBUFFERED": "1"}
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, str(APP)], cwd=tmp_path, env=env, stdout=o, stderr=e)
    try:

        def call(path: str, body: dict | None = None) -> dict | None:  # type: ignore[type-arg]
            data = json.dumps(body).encode() if body is not None else None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=2) as answer:
                    return json.loads(answer.read())
            except OSError:
                return None

        wait_for(lambda: call("/easy/query?code=x"), 20, "the stand-in's API")
        for code, kind in (("ok-1", "ok"), ("hang-1", "hang")):
            body = {"audio_url": "a.wav", "video_url": "v.mp4", "code": code, "pn": 1, "test_kind": kind}
            assert call("/easy/submit", body) == {"code": 10000, "data": {}, "msg": 10000, "success": True}
            wait_for(
                lambda c=code: ((call(f"/easy/query?code={c}") or {}).get("data") or {}).get("status") in (2, 3),
                10,
                code,
            )
        time.sleep(1.5)  # the queue-release lines after HeyGem's own timeout
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = out.read_text().splitlines() + err.read_text().splitlines()
    shapes = {s for line in lines if (s := shape(line, ["ok-1", "hang-1"]))}
    assert len(shapes) >= 12, shapes
    assert shapes <= scenario_shapes(), shapes - scenario_shapes()
    access = [line for line in lines if "/easy/" in line and "HTTP/1.1" in line]
    assert access and all(ACCESS.match(line) for line in access), access
    assert any(line == "_queue.Empty" for line in lines)
