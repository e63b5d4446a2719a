"""A stand-in for HeyGem's app.py, for the launcher's tests: stdlib only, behaves as FIELD.md section 2 says.

- answers HTTP on GRADIO_SERVER_PORT (default 7860): `HEAD /` and `GET /` (JSON: pid, workers, env);
- starts two multiprocessing workers with the spawn start method, as HeyGem does for its GPU models;
- writes HeyGem's log lines, in its format, to ./log/dh.log and to stderr;
- TEST_APP_MODE tells it to misbehave: `crash` (exit 3 after TEST_APP_CRASH_AFTER s), `crash-loop` (exit 3
  at once), `ignore-sigterm` (it and its workers ignore SIGTERM), `slow-start` (TEST_APP_START_DELAY s
  before it listens);
- `GET /emit/<kind>` writes a log line on demand: `queue-full`, `failure`, `progress`, `task-start`,
  `fallback` (ORT's CPU fallback line, on stderr), or `raw?text=...`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import multiprocessing
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

MODE = os.environ.get("TEST_APP_MODE", "normal")
LINES = {
    "queue-full": (logging.ERROR, "任务视频驱动队列满，严重阻塞，下游队列异常"),
    "failure": (logging.ERROR, "任务执行失败"),
    "task-start": (logging.INFO, "任务视频驱动队列启动 batch_size:4, len:150"),
    "fallback": (logging.WARNING, "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*"),
}


def worker(index: int) -> None:
    if MODE == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def setup_log() -> logging.Logger:
    Path("log").mkdir(exist_ok=True)
    fmt = logging.Formatter("[%(asctime)s] [%(filename)s[line:%(lineno)d]] [%(levelname)s] [%(message)s]")
    log = logging.getLogger("dh")
    log.setLevel(logging.INFO)
    for handler in (
        logging.handlers.WatchedFileHandler("log/dh.log", encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return log


class Handler(BaseHTTPRequestHandler):
    log: logging.Logger
    workers: list[int]
    progress = 0

    def log_message(self, format: str, *args: object) -> None:  # quiet access log
        pass

    def _reply(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._reply({})

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path.startswith("/emit/"):
            kind = url.path.removeprefix("/emit/")
            if kind == "progress":
                Handler.progress += 1
                self.log.info(f"drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[1], current_idx:{Handler.progress}")
            elif kind == "raw":
                sys.stderr.write(parse_qs(url.query).get("text", [""])[0] + "\n")
                sys.stderr.flush()
            elif kind == "fallback":
                sys.stderr.write(f"[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295] {LINES[kind][1]}\n")
                sys.stderr.flush()
            else:
                level, message = LINES[kind]
                self.log.log(level, message)
            self._reply({"emitted": kind})
            return
        self._reply(
            {
                "pid": os.getpid(),
                "workers": self.workers,
                "mode": MODE,
                "env": {k: v for k, v in os.environ.items() if k.startswith(("APP_", "TEST_", "GRADIO"))},
            }
        )


def main() -> None:
    log = setup_log()
    if MODE == "crash-loop":
        log.error("cannot start: crash-loop mode")
        sys.exit(3)
    if MODE == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if MODE == "slow-start":
        time.sleep(float(os.environ.get("TEST_APP_START_DELAY", "3")))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(i,)) for i in range(2)]
    for proc in procs:
        proc.start()
    log.info(">>> 数字人图片处理进程启动")
    log.info(">>> init_wh_process进程启动")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    Handler.log, Handler.workers = log, [p.pid for p in procs]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"Running on local URL:  http://127.0.0.1:{port}", flush=True)
    if MODE == "crash":
        time.sleep(float(os.environ.get("TEST_APP_CRASH_AFTER", "1")))
        log.error("crashing as told")
        os._exit(3)
    server.serve_forever()


if __name__ == "__main__":
    main()
