"""A stand-in for HeyGem-Linux-Python-Hack's app.py, for the launcher's tests, built from FIELD.md section 2
(HeyGem's source, its committed real log) and checked line by line against ../shared/heygem-replay by
tests/watch/test_stand_in.py. Stdlib only (onnxruntime when TEST_APP_ORT asks for it); runs on Python 3.8.

What it shares with the real app:
- the root logger at INFO with two handlers: a StreamHandler to stderr with `datefmt='%Y-%m-%d %H:%M:%S'` (no
  milliseconds) and a WatchedFileHandler on ./log/dh.log (milliseconds), format
  `[%(asctime)s] [%(filename)s[line:%(lineno)d]] [%(levelname)s] [%(message)s]`: every record twice;
- `print()` without flush (Gradio's URL): under a pipe it arrives at exit unless PYTHONUNBUFFERED is set;
  TEST_APP_STDOUT=held holds it until exit whatever the environment (Python 3.8 without PYTHONUNBUFFERED);
- start: `TransDhTask init`, the service's init (5 s there, TEST_APP_INIT_DELAY here), Gradio up on
  GRADIO_SERVER_PORT (the next free port if it is taken, as Gradio does), httpx's `HEAD /` line, then two
  spawned workers that log `>>> init_wh_process进程启动` / `>>> 数字人图片处理进程启动` once their "models"
  are loaded (TEST_APP_WORKER_DELAY);
- tasks one at a time (Gradio's concurrency 1), line for line as HeyGem logs them, in both modes: `GET
  /task?code=C&kind=K&frames=N&fps=F&encode=S&pingpong=1&audio=A&video=V`. Kinds: `ok`; `blocked` (the
  consumer never reports; the queue-full ERROR after TEST_APP_BLOCK_SECONDS, then nothing, and every later
  task waits: restart is the cure); `stall` (frames stop halfway, no line ever again); `fail` (preprocessing
  fails, the task ends); `writer-fail` (the frame writer fails mid-task, the task ends); `fail-hang` (a
  failure line, then the task never ends). `GET /tasks` lists them.
- ONNX Runtime (TEST_APP_ORT): `cpu` imports the real onnxruntime and runs a CPU session in every process
  (it maps ONNX Runtime, not its CUDA provider); `ask-cuda` asks for CUDA as HeyGem does
  (`[("CUDAExecutionProvider", {"device_id": 0})]`), which ONNX Runtime turns into a CPU session on a machine
  without CUDA; TEST_APP_SESSIONS sessions a process (default 1; each stamped in ./sessions-created.txt);
  `cuda` also loads the real libonnxruntime_providers_cuda.so
  (against stand-in CUDA libraries on LD_LIBRARY_PATH), as a process of a working install maps it;
  TEST_APP_TORCH=1 maps a file named libcuda.so.1 in every process, as torch's CUDA context does.

The launcher's older tests use: TEST_APP_MODE `crash`, `crash-loop`, `ignore-sigterm`, `slow-start`,
`noisy-stop` (logs the queue-full line again while it stops); `GET /`
(JSON: pid, workers, mode, env, port); `GET /emit/<kind>` for one line on demand (`queue-full`, `failure`,
`progress`, `frames`, `task-start`, `frames-start`, `task-end`, `fallback` (ONNX Runtime's line, stderr),
`ep-error` (the Python layer's, stdout), `raw?text=…` (stderr)).
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import mmap
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

MODE = os.environ.get("TEST_APP_MODE", "normal")
SPEED = float(os.environ.get("TEST_APP_SPEED", "1"))  # time compression of HeyGem's own waits
FMT = "[%(asctime)s] [%(filename)s[line:%(lineno)d]] [%(levelname)s] [%(message)s]"
PROBE_MODEL = Path(__file__).resolve().parent.parent / "launcher" / "preflight" / "data" / "probe.onnx"
_held: list[object] = []  # mappings and sessions that must live as long as the process


def setup_logging() -> logging.Logger:
    """HeyGem's logger: the root logger, two handlers, two timestamp formats (FIELD.md section 2)."""
    Path("log").mkdir(exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    file_handler = logging.handlers.WatchedFileHandler("log/dh.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(FMT))
    root.addHandler(file_handler)
    if os.environ.get("TEST_APP_LOG_STDERR", "1") != "0":
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(FMT, datefmt="%Y-%m-%d %H:%M:%S"))
        root.addHandler(stream)
    return root


def emit(level: int, message: str, filename: str = "app.py", lineno: int = 210) -> None:
    """A record as HeyGem's code at `filename:lineno` writes it (the stand-in's own file name would differ)."""
    record = logging.LogRecord("root", level, filename, lineno, message, None, None)
    record.filename = filename
    logging.getLogger().handle(record)


def worker_line(message: str, level: int = logging.INFO) -> None:
    emit(level, message, "process.py", 108)


CPU_PROVIDER = "CPUExecutionProvider"


def load_onnxruntime() -> None:
    """What HeyGem's processes have of ONNX Runtime and CUDA, for /proc/PID/maps to show."""
    ort_mode = os.environ.get("TEST_APP_ORT", "none")
    if ort_mode != "none":
        import onnxruntime

        model = os.environ.get("TEST_APP_MODEL", str(PROBE_MODEL))
        # HeyGem asks for CUDA alone, with a device id (FIELD.md section 2); `cpu` asks for the CPU.
        providers = [("CUDAExecutionProvider", {"device_id": 0})] if ort_mode == "ask-cuda" else [CPU_PROVIDER]
        for n in range(int(os.environ.get("TEST_APP_SESSIONS", "1"))):
            with open("sessions-created.txt", "a") as stamps:  # when each was asked for, for the tests
                stamps.write(f"{os.getpid()} {time.time()}\n")
            session = onnxruntime.InferenceSession(model, providers=providers)
            if n == 0:
                _held.append(session)
        if ort_mode == "cuda":
            import ctypes

            capi = Path(onnxruntime.__file__).parent / "capi"
            _held.append(ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so")))
    if os.environ.get("TEST_APP_TORCH") == "1":
        # torch's CUDA context maps libcuda.so.1 whatever ONNX Runtime does (HeyGem issue #54).
        lib = Path(tempfile.gettempdir()) / f"heygem-like-{os.getpid()}" / "libcuda.so.1"
        lib.parent.mkdir(exist_ok=True)
        lib.write_bytes(b"\0" * 4096)
        with lib.open("rb") as handle:
            _held.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))


def worker(name: str) -> None:
    setup_logging()
    if MODE == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    load_onnxruntime()
    time.sleep(float(os.environ.get("TEST_APP_WORKER_DELAY", "0.3")))  # loading its models
    worker_line(f">>> {name}")
    while True:
        time.sleep(1)


class Tasks:
    """HeyGem's task service, one task at a time."""

    lock = threading.Lock()
    seen: ClassVar[list[dict[str, object]]] = []

    @classmethod
    def submit(cls, query: dict[str, list[str]]) -> dict[str, object]:
        def arg(key: str, default: str) -> str:
            return query.get(key, [default])[0]

        task = {
            "code": arg("code", str(uuid.uuid4())),
            "kind": arg("kind", "ok"),
            "frames": int(arg("frames", "40")),
            "fps": float(arg("fps", "40")),
            "encode": float(arg("encode", "0.5")),
            "pingpong": arg("pingpong", "0") == "1",
            "audio": arg("audio", "./temp/audio.wav"),
            "video": arg("video", "./temp/video.mp4"),
            "state": "queued",
        }
        cls.seen.append(task)
        threading.Thread(target=cls.run, args=(task,), daemon=True).start()
        return task

    @classmethod
    def run(cls, task: dict[str, object]) -> None:
        with cls.lock:  # Gradio's default concurrency: a hung task blocks every later one
            task["state"] = "running"
            began = time.time()
            code = task["code"]
            try:
                cls.steps(task)
            except Hung:
                task["state"] = "hung"
                while True:
                    time.sleep(3600)  # holds the lock: every later task waits, as in the incident
            except Failed as exc:
                emit(logging.ERROR, f"[{code}]任务执行失败，异常信息:[{exc}]")
                task["state"] = "failed"
            else:
                task["state"] = "done"
            emit(logging.INFO, f">>> 任务:{code} 耗时:{time.time() - began} ")

    @staticmethod
    def steps(task: dict[str, object]) -> None:
        code, kind, frames = task["code"], task["kind"], int(task["frames"])  # type: ignore[call-overload]
        emit(logging.INFO, f"任务:{code} -> audio_url:{task['audio']}  video_url:{task['video']}")
        emit(
            logging.INFO,
            f"[{code}] -> ffmpeg video: ffmpeg -loglevel warning -i {task['video']} -crf 15 -vcodec copy -an -y "
            f"./{code}_format.mp4",
        )
        if kind == "fail":
            emit(logging.ERROR, f"[{code}]预处理失败，异常信息:[format video error]")
            raise Failed(f"[{code}]预处理失败，异常信息:[format video error]")
        emit(logging.INFO, f"[{code}] -> 预处理耗时:0.35927414894104004s")
        if kind == "fail-hang":
            emit(logging.ERROR, f"[{code}]音频特征提取失败，异常信息:[stand-in]")
            raise Hung()
        time.sleep(0.2 / SPEED)
        worker_line(f"[{code}]任务视频驱动队列启动 batch_size:4" + ("" if task["pingpong"] else f", len:{frames}"))
        worker_line("drivered_video >>>>>>>>>>>>>>>>>>>> 开始循环")
        batches: queue.Queue[int] = queue.Queue(10)  # HeyGem's Queue(10)
        stop_at = frames // 2 if kind == "stall" else frames
        block = float(os.environ.get("TEST_APP_BLOCK_SECONDS", "60")) / SPEED

        def producer() -> None:
            for idx in range(4, frames + 1, 4):
                suffix = "" if task["pingpong"] else f", current_idx:{idx}"
                worker_line(f"drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[4]{suffix}")
                try:
                    batches.put(idx, timeout=block)
                except queue.Full:
                    worker_line(f"[{code}]任务视频驱动队列满，严重阻塞，下游队列异常", logging.ERROR)
                    return
            batches.put(-1)

        threading.Thread(target=producer, daemon=True).start()
        if kind == "blocked":
            raise Hung()  # the consumer never reports
        done = 0
        while True:
            idx = batches.get()
            if idx < 0:
                worker_line(">>> audio_transfer get exception msg:-1")
                break
            time.sleep(4 / float(task["fps"]))  # type: ignore[arg-type]
            worker_line(f">>> audio_transfer get message:{idx}")
            worker_line(f"audio_transfer >>>>>>>>>>> 发送完成数据大小:4, frameId:{idx}, cost:{4 / task['fps']:.2f}s")
            done += 4
            if kind == "writer-fail" and done >= frames // 2:
                emit(
                    logging.ERROR,
                    f"Custom VideoWriter [{code}]任务视频帧队列 -> 异常原因:"
                    "[数字人处理失败，失败原因:[CUDA out of memory]]",
                    lineno=62,
                )
                raise Failed("CUDA out of memory")
            if kind == "stall" and done >= stop_at:
                raise Hung()
        worker_line(f"[{code}]任务数字人图片处理已完成")
        emit(logging.INFO, f"Custom VideoWriter [{code}]视频帧队列处理已结束", lineno=52)
        emit(
            logging.INFO,
            f"Custom command:ffmpeg -loglevel warning -y -i {task['audio']} -i ./temp/{code}-t.mp4 -c:a aac "
            f"-c:v libx264 -crf 15 -strict -2 ./result/{code}-r.mp4",
            lineno=118,
        )
        time.sleep(float(task["encode"]))  # type: ignore[arg-type]  # the final re-encode: no line at all


def flood(rate: float, seconds: float) -> None:
    code = started_task()
    worker_line(f"[{code}]任务视频驱动队列启动 batch_size:4")
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        while sent < elapsed * rate:
            sent += 1
            worker_line(f"audio_transfer >>>>>>>>>>> 发送完成数据大小:4, frameId:{4 * sent}, cost:0.46s")
        time.sleep(0.005)


class Failed(Exception):
    pass


class Hung(Exception):
    pass


LAST_CODE = [""]


def started_task() -> str:
    """A task started on demand, as HeyGem logs it: a failure or blocked line is about a task it started."""
    LAST_CODE[0] = code = f"emit-{os.getpid()}-{time.monotonic_ns()}"
    emit(logging.INFO, f"任务:{code} -> audio_url:./temp/a.wav  video_url:./temp/v.mp4")
    return code


EMIT = {
    "queue-full": lambda: worker_line(f"[{started_task()}]任务视频驱动队列满，严重阻塞，下游队列异常", logging.ERROR),
    "failure": lambda: emit(logging.ERROR, f"[{started_task()}]任务执行失败，异常信息:[stand-in failure]"),
    "task-start": started_task,
    "frames-start": lambda: worker_line(f"[{LAST_CODE[0]}]任务视频驱动队列启动 batch_size:4, len:400"),
    "progress": lambda: worker_line("drivered_video >>>>>>>>>>>>>>>>>>>> 发送数据大小:[4], current_idx:4"),
    "frames": lambda: worker_line("audio_transfer >>>>>>>>>>> 发送完成数据大小:4, frameId:4, cost:0.46s"),
    "task-end": lambda: emit(logging.INFO, f">>> 任务:{LAST_CODE[0]} 耗时:1.0 "),
}


class Handler(BaseHTTPRequestHandler):
    workers: ClassVar[list[int]] = []
    port = 0

    def log_message(self, format: str, *args: object) -> None:  # quiet access log
        pass

    def _reply(self, body: object) -> None:
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
        query = parse_qs(url.query)
        if url.path == "/task":
            self._reply(Tasks.submit(query))
            return
        if url.path == "/tasks":
            self._reply(Tasks.seen)
            return
        if url.path == "/flood":  # a long task's consumer lines at `rate` a second, for the benchmarks
            rate, seconds = float(query.get("rate", ["200"])[0]), float(query.get("seconds", ["10"])[0])
            threading.Thread(target=flood, args=(rate, seconds), daemon=True).start()
            self._reply({"rate": rate, "seconds": seconds})
            return
        if url.path.startswith("/emit/"):
            kind = url.path[len("/emit/") :]
            if kind == "raw":
                sys.stderr.write(query.get("text", [""])[0] + "\n")
                sys.stderr.flush()
            elif kind == "fallback":  # ONNX Runtime's C++ logger, on stderr (1.16's text)
                sys.stderr.write(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}.000000123 [W:onnxruntime:Default, "
                    "onnxruntime_pybind_state.cc:640 CreateExecutionProviderInstance] Failed to create "
                    "CUDAExecutionProvider. Please reference https://onnxruntime.ai/docs/execution-providers/"
                    "CUDA-ExecutionProvider.html#requirements to ensure all dependencies are met.\n"
                )
                sys.stderr.flush()
            elif kind == "ep-error":  # ONNX Runtime's Python layer: print(), on stdout, not flushed
                print(
                    "EP Error CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version when "
                    "using ['CUDAExecutionProvider']"
                )
                print("Falling back to ['CPUExecutionProvider'] and retrying.")
            else:
                EMIT[kind]()
            self._reply({"emitted": kind})
            return
        self._reply(
            {
                "pid": os.getpid(),
                "workers": self.workers,
                "mode": MODE,
                "port": self.port,
                "env": {k: v for k, v in os.environ.items() if k.startswith(("APP_", "TEST_", "GRADIO", "PYTHON"))},
            }
        )


def serve(port: int) -> ThreadingHTTPServer:
    """Gradio's way: the port asked for, else the next free one, silently (up to 7959 for 7860)."""
    for candidate in range(port, port + 100):
        try:
            return ThreadingHTTPServer((os.environ["GRADIO_SERVER_NAME"], candidate), Handler)
        except OSError:
            continue
    raise OSError(f"no free port from {port}")


def main() -> None:
    if os.environ.get("TEST_APP_STDOUT") == "held":
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 20))
    # HeyGem's app.py sets it itself, before Gradio reads it: the app listens on every interface, so that a
    # container's published port reaches it.
    os.environ["GRADIO_SERVER_NAME"] = "0.0.0.0"
    setup_logging()
    emit(logging.INFO, "TransDhTask init", lineno=159)
    if MODE == "crash-loop":
        emit(logging.ERROR, "cannot start: crash-loop mode")
        sys.exit(3)
    if MODE == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if MODE == "slow-start":
        time.sleep(float(os.environ.get("TEST_APP_START_DELAY", "3")))
    emit(logging.INFO, "开始初始化 trans_dh_service...", lineno=160)
    load_onnxruntime()
    time.sleep(float(os.environ.get("TEST_APP_INIT_DELAY", "0.2")))
    emit(logging.INFO, "trans_dh_service 初始化完成。", lineno=166)
    print("VideoProcessor init done")
    # The workers load their models while Gradio comes up: their markers follow Gradio's HEAD line.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(n,)) for n in ("init_wh_process进程启动", "数字人图片处理进程启动")]
    for proc in procs:
        proc.start()
    Handler.workers = [p.pid for p in procs]  # type: ignore[misc]
    server = serve(int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    Handler.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"Running on local URL:  http://{os.environ['GRADIO_SERVER_NAME']}:{Handler.port}")
    print("To create a public link, set `share=True` in `launch()`.")
    emit(logging.INFO, f'HTTP Request: HEAD http://localhost:{Handler.port}/ "HTTP/1.1 200 OK"', "_client.py", 1025)
    if MODE == "noisy-stop":
        # A dying app that logs its queue-full line once more while it stops (issue 8 #6).
        def noisy(_signum: int, _frame: object) -> None:
            # TEST_APP_NOISY_CODE=other: about a task the watchdog never saw start (issue 20 #7).
            other = os.environ.get("TEST_APP_NOISY_CODE") == "other"
            code = f"stray-{os.getpid()}" if other else LAST_CODE[0]
            worker_line(f"[{code}]任务视频驱动队列满，严重阻塞，下游队列异常", logging.ERROR)
            time.sleep(0.3)
            os._exit(0)

        signal.signal(signal.SIGTERM, noisy)
    if MODE == "crash":
        time.sleep(float(os.environ.get("TEST_APP_CRASH_AFTER", "1")))
        emit(logging.ERROR, "crashing as told")
        os._exit(3)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
