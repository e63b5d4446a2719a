"""Watchdog benchmarks: queue-full line -> new app pid, stall -> restart, and probe latency."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from service import Stack, app_pids, wait_until

STALL_SECONDS = 3.0


def emit(stack: Stack, kind: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/emit/{kind}", timeout=5):
        pass


def _new_app(stack: Stack, old: int) -> int:
    return wait_until(lambda: next((p for p in app_pids() if p != old and p in stack.descendants()), None), timeout=30)


def bench_detect(rounds: int) -> dict[str, object]:
    """The line arrives -> the next app process exists; then a stall -> the next app process exists."""
    blocked, stall = [], []
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack("launcher", Path(tmp) / "detect", {"HEYGEM_STALL_SECONDS": str(STALL_SECONDS)})
        try:
            for _ in range(rounds):
                old = stack.app()
                wait_until(lambda s=stack: _ready(s), timeout=30, interval=0.05)
                started = time.perf_counter()
                emit(stack, "queue-full")
                old = _new_app(stack, old)
                blocked.append(time.perf_counter() - started)

                wait_until(lambda s=stack: _ready(s), timeout=30, interval=0.05)
                emit(stack, "task-start")
                emit(stack, "progress")
                last = time.perf_counter()
                _new_app(stack, old)
                stall.append(time.perf_counter() - last)
        finally:
            stack.stop()
    blocked_median, stall_median = statistics.median(blocked), statistics.median(stall)
    return {
        "queue_full_to_new_pid_median_s": round(blocked_median, 3),
        "queue_full_max_s": round(max(blocked), 3),
        "queue_full_target_s": 2.0,
        "stall_seconds": STALL_SECONDS,
        "stall_to_new_pid_median_s": round(stall_median, 3),
        "stall_max_s": round(max(stall), 3),
        "stall_target_s": STALL_SECONDS + 2,
        "pass": blocked_median < 2.0 and max(stall) < STALL_SECONDS + 2,
    }


def _ready(stack: Stack) -> bool:
    return _probe(stack, "ready")[0] == 0


def _probe(stack: Stack, kind: str) -> tuple[int, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "probe", kind],
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return proc.returncode, time.perf_counter() - started


def bench_probes(rounds: int) -> dict[str, object]:
    """`heygem-launch probe live|ready|startup` against a ready service, interleaved."""
    times: dict[str, list[float]] = {"live": [], "ready": [], "startup": []}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack("launcher", Path(tmp) / "probes")
        try:
            wait_until(lambda: _ready(stack), timeout=30, interval=0.05)
            for _ in range(rounds):
                for kind in times:
                    code, elapsed = _probe(stack, kind)
                    if code != 0:
                        raise SystemExit(f"probe {kind} failed on a ready service")
                    times[kind].append(elapsed)
        finally:
            stack.stop()
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    return {**{f"{k}_median_s": v for k, v in medians.items()}, "target_s": 0.3, "pass": max(medians.values()) < 0.3}


def bench_flood(seconds: float, rate: float = 200.0) -> dict[str, object]:
    """The launcher side's CPU while the app writes `rate` records a second (each to its log file and to
    stderr, as HeyGem does), beside the same processes at rest, in one run."""
    from service import _cpu_seconds, _is_descendant, _name

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack("launcher", Path(tmp) / "flood")
        try:
            app = stack.app()
            wait_until(lambda s=stack: _ready(s), timeout=30, interval=0.05)
            side = [p for p in stack.descendants() if p != app and not _is_descendant(p, app)]

            def cpu_over(window: float) -> dict[str, float]:
                before = {p: _cpu_seconds(p) for p in side}
                time.sleep(window)
                return {_name(p): round((_cpu_seconds(p) - before[p]) / window * 100, 2) for p in side}

            idle = cpu_over(seconds)
            with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/flood?rate={rate}&seconds={seconds + 2}"):
                pass
            time.sleep(1)
            busy = cpu_over(seconds)
            restarted = stack.app() != app
        finally:
            stack.stop()
    launcher = busy.get("heygem-launch", 0.0)
    return {
        "records_per_s": rate,
        "window_s": seconds,
        "idle_cpu_percent": idle,
        "flood_cpu_percent": busy,
        "heygem_launch_target_percent": 1.0,
        "restarted_during_flood": restarted,
        "pass": launcher <= 1.0 and not restarted,
    }


def bench_long_lines(total_mib: int = 1024) -> dict[str, object]:
    """1 GiB of 1 MiB lines without a break into the app's log, then a task's queue-full line: the
    launcher's RSS growth (and peak) while it follows them, and the incident file written after them."""
    from service import _rss_kb

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "long"
        stack = Stack("launcher", workdir, {"HEYGEM_MAX_RESTARTS": "5"})
        try:
            stack.app()
            wait_until(lambda s=stack: _ready(s), timeout=30, interval=0.05)
            pid = stack.proc.pid
            before = _rss_kb(pid)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            long_line = f"[{stamp},000] [app.py[line:210]] [INFO] [".encode() + b"x" * (1 << 20) + b"]\n"
            log = workdir / "log" / "dh.log"
            started = time.perf_counter()
            with log.open("ab") as handle:
                for _ in range(total_mib):
                    handle.write(long_line)
                start = f"[{stamp},100] [app.py[line:210]] [INFO] [任务:long -> audio_url:a  video_url:v]\n"
                blocked = f"[{stamp},200] [process.py[line:108]] [ERROR] [[long]任务视频驱动队列满，严重阻塞]\n"
                handle.write((start + blocked).encode())
            snapshot = wait_until(lambda: next(iter((workdir / "run").glob("incident-*-blocked.json")), None), 600, 0.2)
            caught_up = time.perf_counter() - started
            after, peak = _rss_kb(pid), _rss_kb(pid, "VmHWM")
            size = snapshot.stat().st_size
        finally:
            stack.stop()
    growth = (after - before) / 1024
    return {
        "written_mib": total_mib,
        "rss_before_mb": round(before / 1024, 1),
        "rss_growth_mb": round(growth, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "caught_up_s": round(caught_up, 1),
        "incident_file_bytes": size,
        "targets": "growth < 5 MB, incident file < 1 MB",
        "pass": growth < 5 and size < 1_000_000,
    }
