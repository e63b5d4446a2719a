"""A stand-in for HeyGem.ai / Duix.Avatar's gen-video service (`python /code/app_local.py`, Flask on 8383), for
the launcher's tests, built from FIELD.md section 7 and FIELD-heygem-ai.md (sections 4.1, 5, 6, 7, 8) and checked
against tests/scenarios/duix-replay by tests/watch/test_gen_video_stand_in.py. Stdlib only; Python 3.8+.

What it shares with the real service (log dialect B):
- records `YYYY-mm-dd HH:MM:SS,mmm-[service.self_logger]-FILE[line:N]-LEVEL: message` from a logger named
  `service.self_logger` (the root logger has no handler), on stdout (which stream the image uses is not known);
  werkzeug's access lines raw on stderr (`127.0.0.1 - - [20/Oct/2025 09:13:18] "GET /easy/query?code=… HTTP/1.1"
  200 -`), Flask's startup lines raw, tracebacks and prints raw;
- start: ` -> 服务不进行注册` (WARNING), `system ->init_wh_process start...` in the init_wh worker,
  `system ->get_audio_p[P] transfer_p[P] start `, three worker processes that log `system ->init_wh_process module
  load success, cost:…s`, `system ->get_aud_feat1 module load success, cost:…s`, `system ->av_transfer load success
  ..., cost:…s ` once their "models" are loaded (TEST_GENVIDEO_LOAD_SECONDS each, comma-separated, real seconds);
  then the fixed 15-s sleep (compressed by TEST_APP_SPEED, as tests/heygem_like_app.py compresses HeyGem's waits),
  `******************* TransDhServer服务启动 *******************`, `创建结果目录`, and Flask: one request at a time
  (`threaded=False`) on `config/config.ini` `[http_server] server_port` (default 8383), read from the working
  directory as the real service reads it;
- TEST_GENVIDEO_WORKERS=dead: the workers die at start as with no usable driver (#471, #526, #592): `检测人脸使用GPU`,
  ONNX Runtime's EP Error block, `RuntimeError: … CUDA failure 35 …` (init_wh), `RuntimeError: Found no NVIDIA
  driver on your system…` (av_transfer), no `load success`; Flask starts anyway and takes tasks, which hang;
- `POST /easy/submit` `{"audio_url", "video_url", "code", "chaofen", "watermark_switch", "pn"}` -> `{"code": 10000,
  …}`, 10001 while a task runs (and `<code> -> busy ` WARNING); `GET /easy/query?code=` -> status 1 running
  (progress 5), 2 done, 3 failed, then the task is deleted; unknown -> 10004 `任务不存在`;
- a task: `<c> ->audio_url:…, video_url:…, chaofen:0, pn:1`, `<c> -> video_info:[25.0/1080/1920/S], audio_info:[S]`,
  then no line of its own until `<c> -> 耗时:…s ` or a failure;
- HeyGem's own timeout: no result for TEST_GENVIDEO_TIMEOUT s (600, compressed) after `video_info` -> the
  `_queue.Empty` traceback, `<c> -> 任务执行失败…[no final result]`, the queue-release lines;
- its own watchdog: after TEST_GENVIDEO_BLOCK_SECONDS (60, compressed) without a result, `<c> ->av_transfer maybe
  blocked, restart...`, it kills and respawns its workers (they log `load success` again), then
  `<c> ->result info [] ,continue ...` every second.

How a task goes, for the tests only (fields the real client never sends): `test_kind` `ok` (ends after
`test_seconds`), `hang` (no result: HeyGem's own timeout ends it), `self-restart` (stuck: its own watchdog line,
repeated every TEST_GENVIDEO_BLOCK_SECONDS), `fail` (`三次获取音频时长失败`, then the end line); `test_audio_seconds`
gives the audio_info. With dead workers every task hangs. `GET /pid` (not HeyGem's) answers the main pid.
"""

from __future__ import annotations

import configparser
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

SPEED = float(os.environ.get("TEST_APP_SPEED", "1"))  # time compression of HeyGem's own waits
WORKERS_DEAD = os.environ.get("TEST_GENVIDEO_WORKERS", "ok") == "dead"
FMT = "%(asctime)s-[%(name)s]-%(filename)s[line:%(lineno)d]-%(levelname)s: %(message)s"
LOGGER = "service.self_logger"
THREAD = ("threading.py", 870)  # Python 3.8's Thread.run: every task line
WORKER = ("process.py", 108)  # anything logged in a worker process
RELEASES = ("audio_feature_queue_output", "output_queue", "trans_queue", "init_wh_queue", "init_wh_queue_output")


def setup_logging() -> None:
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(FMT))
        logger.addHandler(handler)


def emit(level: int, message: str, where: tuple = ("app_local.py", 220)) -> None:
    """A record as the service's code at `where` writes it (the stand-in's own file name would differ)."""
    record = logging.LogRecord(LOGGER, level, where[0], where[1], message, None, None)
    record.filename = where[0]
    logging.getLogger(LOGGER).handle(record)
    sys.stdout.flush()


def wait(seconds: float) -> None:
    """One of HeyGem's own waits, compressed by TEST_APP_SPEED."""
    time.sleep(seconds / SPEED)


def load_seconds(index: int) -> float:
    raw = os.environ.get("TEST_GENVIDEO_LOAD_SECONDS", "0.3,0.4,0.6").split(",")
    return float(raw[min(index, len(raw) - 1)])


# -- the worker processes ----------------------------------------------------------------------------------
def init_wh_worker(index: int) -> None:
    setup_logging()
    emit(logging.INFO, "system ->init_wh_process start...", WORKER)
    if WORKERS_DEAD:
        print("检测人脸使用GPU")
        print("*************** EP Error ***************")
        print(
            "EP Error /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 CUDA failure 35: CUDA driver "
            "version is insufficient for CUDA runtime version ; GPU=0 ; expr=cudaSetDevice(info_.device_id); "
        )
        sys.stdout.flush()
        raise RuntimeError(
            "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 CUDA failure 35: CUDA driver version "
            "is insufficient for CUDA runtime version ; GPU=0 ; expr=cudaSetDevice(info_.device_id); "
        )
    began = time.time()
    time.sleep(load_seconds(index))
    emit(logging.INFO, f"system ->init_wh_process module load success, cost:{time.time() - began:.3f}s", WORKER)
    idle()


def get_audio_worker(index: int) -> None:
    setup_logging()
    if WORKERS_DEAD:
        idle()  # the audio worker survives in the reports; it never says it loaded
    began = time.time()
    time.sleep(load_seconds(index))
    emit(logging.INFO, f"system ->get_aud_feat1 module load success, cost:{time.time() - began:.3f}s", WORKER)
    idle()


def transfer_worker(index: int) -> None:
    setup_logging()
    if WORKERS_DEAD:
        print("----------------- Options ---------------")
        print("             aspect_ratio: 1.0                           ")
        sys.stdout.flush()
        raise RuntimeError(
            "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver "
            "from http://www.nvidia.com/Download/index.aspx"
        )
    began = time.time()
    time.sleep(load_seconds(index))
    emit(logging.INFO, f"system ->av_transfer load success ..., cost:{time.time() - began:.3f}s ", WORKER)
    idle()


def idle() -> None:
    while True:
        time.sleep(3600)


class Workers:
    """The three worker processes, spawned as the service spawns them, and killed and respawned by its own
    watchdog."""

    procs: ClassVar[list[Any]] = []

    @classmethod
    def spawn(cls, where: tuple = ("app_local.py", 220)) -> None:
        ctx = multiprocessing.get_context("spawn")
        cls.procs = [
            ctx.Process(target=init_wh_worker, args=(0,), daemon=True),
            ctx.Process(target=get_audio_worker, args=(1,), daemon=True),
            ctx.Process(target=transfer_worker, args=(2,), daemon=True),
        ]
        for proc in cls.procs:
            proc.start()
        emit(logging.INFO, f"system ->get_audio_p[{cls.procs[1].pid}] transfer_p[{cls.procs[2].pid}] start ", where)

    @classmethod
    def restart(cls, code: str) -> None:
        emit(logging.INFO, f"{code} ->kill all process", THREAD)
        for proc in cls.procs:
            emit(logging.INFO, f"{code} -> pid[{proc.pid}] kill send", THREAD)
            proc.kill()
        for proc in cls.procs:
            proc.join(5)
        emit(logging.INFO, f"{code} ->all process killed and restart ", THREAD)
        cls.spawn(THREAD)


# -- tasks -------------------------------------------------------------------------------------------------
class Tasks:
    lock = threading.Lock()
    by_code: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def submit(cls, body: dict[str, Any]) -> dict[str, Any]:
        code = str(body.get("code", ""))
        if not cls.lock.acquire(blocking=False):
            emit(logging.WARNING, f"{code} -> busy ", ("app_local.py", 55))
            return {"code": 10001, "data": {}, "msg": "忙碌中", "success": True}
        task = {"code": code, "status": 1, "progress": 0, "msg": "", "result": "", "body": body}
        cls.by_code[code] = task
        threading.Thread(target=cls.run, args=(task,), daemon=True).start()
        return {"code": 10000, "data": {}, "msg": 10000, "success": True}

    @classmethod
    def query(cls, code: str) -> dict[str, Any]:
        task = cls.by_code.get(code)
        if task is None:
            return {"code": 10004, "data": {}, "msg": "任务不存在", "success": True}
        if task["status"] in (2, 3):
            del cls.by_code[code]  # a finished task is deleted once its status is read
        data = {k: task[k] for k in ("code", "msg", "progress", "result", "status")}
        return {"code": 10000, "data": data, "msg": "", "success": True}

    @classmethod
    def run(cls, task: dict[str, Any]) -> None:
        body, code = task["body"], task["code"]
        began = time.time()
        try:
            emit(
                logging.INFO,
                f"{code} ->audio_url:{body.get('audio_url')}, video_url:{body.get('video_url')}, "
                f"chaofen:{body.get('chaofen', 0)}, pn:{body.get('pn', 1)}",
                THREAD,
            )
            audio = float(body.get("test_audio_seconds", 9.52))
            info = f"video_info:[25.0/1080/1920/{audio + 0.08:g}], audio_info:[{audio:g}]"
            emit(logging.INFO, f"{code} -> {info}", THREAD)
            task.update(progress=5, msg="文件下载完成")
            kind = "hang" if WORKERS_DEAD else str(body.get("test_kind", "ok"))
            if kind == "ok":
                time.sleep(float(body.get("test_seconds", 0.5)))
                task.update(status=2, progress=100, msg="任务完成", result=f"/{code}-r.mp4")
            elif kind == "fail":
                emit(logging.ERROR, f"{code} -> 任务执行失败，异常信息:[三次获取音频时长失败]", THREAD)
                task.update(status=3, progress=0, msg="三次获取音频时长失败")
            elif kind == "self-restart":
                cls.self_restarts(code)
            else:
                cls.no_final_result(task)
                return  # the real service logs no end line after its own timeout in any report
            emit(logging.INFO, f"{code} -> 耗时:{time.time() - began:.3f}s ", THREAD)
        finally:
            cls.lock.release()

    @classmethod
    def no_final_result(cls, task: dict[str, Any]) -> None:
        wait(float(os.environ.get("TEST_GENVIDEO_TIMEOUT", "600")))
        sys.stderr.write(
            "Traceback (most recent call last):\n"
            '  File "trans_dh_service.py", line 414, in trans_dh_service.TransDhTask.work\n'
            '  File "/usr/local/python3/lib/python3.8/multiprocessing/queues.py", line 108, in get\n'
            "    raise Empty\n_queue.Empty\n"
        )
        sys.stderr.flush()
        emit(logging.ERROR, f"{task['code']} -> 任务执行失败，异常信息:[no final result]", THREAD)
        task.update(status=3, msg="no final result")
        emit(logging.INFO, "system ->start to release queue...", THREAD)
        for name in RELEASES:
            wait(0.2)
            emit(logging.INFO, f"system ->{name} release end.", THREAD)

    @classmethod
    def self_restarts(cls, code: str) -> None:
        """HeyGem's own watchdog, which does not cure it (#481): after the workers' restart the task only says
        `result info []`, and its watchdog fires again."""
        block = float(os.environ.get("TEST_GENVIDEO_BLOCK_SECONDS", "60")) / SPEED
        wait_lines = False
        while True:
            deadline = time.time() + block
            while time.time() < deadline:
                if wait_lines:
                    emit(logging.INFO, f"{code} ->result info [] ,continue ...", THREAD)
                time.sleep(min(1.0, block))
            emit(logging.WARNING, f"{code} ->av_transfer maybe blocked, restart...", THREAD)
            Workers.restart(code)
            wait_lines = True


# -- Flask's part ------------------------------------------------------------------------------------------
class Api(BaseHTTPRequestHandler):
    # BaseHTTPRequestHandler's access line is werkzeug's, byte for byte: `%s - - [%s] "%s" %s -`, on stderr.
    protocol_version = "HTTP/1.0"

    def _reply(self, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/easy/query":
            self._reply(Tasks.query(parse_qs(url.query).get("code", [""])[0]))
        elif url.path == "/pid":
            self._reply({"pid": os.getpid(), "workers": [p.pid for p in Workers.procs]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/easy/submit":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        self._reply(Tasks.submit(body))


def port() -> int:
    config = configparser.ConfigParser()
    config.read("config/config.ini", encoding="utf-8")
    return config.getint("http_server", "server_port", fallback=8383)


def main() -> None:
    setup_logging()
    emit(logging.WARNING, " -> 服务不进行注册", ("app_local.py", 219))
    Workers.spawn()
    wait(15)  # app_local.py sleeps 15 s after TransDhTask.instance(), whatever the workers do
    emit(logging.INFO, "******************* TransDhServer服务启动 *******************", ("app_local.py", 222))
    if not Path("data/result").is_dir():
        emit(logging.INFO, "创建结果目录", ("app_local.py", 227))
        Path("data/result").mkdir(parents=True, exist_ok=True)
    server = HTTPServer(("0.0.0.0", port()), Api)  # threaded=False: one request at a time
    print(" * Serving Flask app 'app_local'\n * Debug mode: off", flush=True)
    sys.stderr.write(
        "WARNING: This is a development server. Do not use it in a production deployment. Use a production WSGI "
        f"server instead.\n * Running on all addresses (0.0.0.0)\n * Running on http://127.0.0.1:{port()}\n"
        "Press CTRL+C to quit\n"
    )
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except Exception:
        traceback.print_exc()
        raise
