"""Service benchmarks: respawn after kill -9, SIGTERM to exit, and the launcher side's idle cost.

Each runs the real stack (heygem-launch, supervisord, the wrapper) with tests/heygem_like_app.py, and where
there is a baseline (supervisord alone, same app, same settings) measures both in the same run, interleaved.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "tests" / "heygem_like_app.py"
APP_ARGV = ["python", str(APP)]
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_RSS_TARGET_MB = 50  # the three processes' RSS together (issue 15; 60 before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_pids() -> list[int]:
    """Main processes of the test app (argv exactly `python APP`), whoever started them."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if [a.decode(errors="replace") for a in argv] == APP_ARGV:
                found.append(int(name))
    return found


def wait_until(check, timeout: float = 30, interval: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit("benchmark: timed out waiting")


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as response:
            response.read()
            return True
    except (OSError, http.client.HTTPException):  # refused, or cut off by a restart mid-answer
        return False


class Stack:
    """Either heygem-launch (the whole stack) or supervisord alone, running the test app."""

    def __init__(self, kind: str, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kind, self.port = kind, free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GRADIO_SERVER_PORT": str(self.port),
            "HEYGEM_CONDA_ENV": "",
            "HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider",
            "HEYGEM_APP_COMMAND": " ".join(APP_ARGV),
            "HEYGEM_RUN_DIR": str(workdir / "run"),
            "HEYGEM_START_SECONDS": "1",
            "HEYGEM_STOP_GRACE": "5",
            "HEYGEM_MAX_RESTARTS": "1000",
            # The supervision mechanics against supervisord alone, not the backoff's wait (HEYGEM_RESTART_DELAY,
            # 1 s first by default since issue 19): a default stack respawns a crashed app after that wait.
            "HEYGEM_RESTART_DELAY": "0",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            **(extra_env or {}),
        }
        self.env = env
        if kind == "launcher":
            cmd = [sys.executable, "-m", "launcher"]
        else:
            conf = workdir / "supervisord.conf"
            conf.write_text(
                f"[supervisord]\nnodaemon=true\nsilent=true\nlogfile={workdir}/sd.log\npidfile={workdir}/sd.pid\n"
                + ("user=root\n" if os.geteuid() == 0 else "")
                + f"[program:app]\ncommand={' '.join(APP_ARGV)}\nautorestart=true\nstartsecs=1\nstopwaitsecs=5\n"
                f"stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\nstdout_logfile={workdir}/app.log\n"
            )
            cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(lambda: answers(self.port), timeout=60, interval=0.05)

    def app(self) -> int:
        """This stack's app main pid."""
        return wait_until(lambda: next((p for p in app_pids() if p in self.descendants()), None))

    def descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def stop(self) -> float:
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return time.perf_counter() - started


def bench_respawn(rounds: int) -> dict[str, object]:
    """kill -9 of the running app -> a new app process: the launcher's stack against supervisord alone."""
    times: dict[str, list[float]] = {"launcher": [], "supervisord": []}
    with tempfile.TemporaryDirectory() as tmp:
        stacks = {kind: Stack(kind, Path(tmp) / kind) for kind in times}
        try:
            for _ in range(rounds):
                for kind, stack in stacks.items():  # interleaved
                    old = stack.app()
                    time.sleep(1.3)  # past startsecs: a crash of a running app
                    workers = _children(old)
                    started = time.perf_counter()
                    os.kill(old, signal.SIGKILL)
                    wait_until(lambda s=stack, o=old: any(p != o for p in app_pids() if p in s.descendants()))
                    times[kind].append(time.perf_counter() - started)
                    for pid in workers:  # supervisord alone leaves them running: exactly the problem
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    wait_until(lambda s=stack: answers(s.port), timeout=30, interval=0.02)
        finally:
            for stack in stacks.values():
                stack.stop()
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "launcher_median_s": round(median["launcher"], 3),
        "supervisord_alone_median_s": round(median["supervisord"], 3),
        "launcher_max_s": round(max(times["launcher"]), 3),
        "target_s": 0.5,
        "pass": median["launcher"] < 0.5,
    }


def bench_stop(rounds: int) -> dict[str, object]:
    """SIGTERM -> exit, with a well-behaved app; the app's own stop time measured in the same runs."""
    total, app_stop = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            stack = Stack("launcher", Path(tmp) / f"s{i}")
            app = stack.app()
            started = time.perf_counter()
            stack.proc.send_signal(signal.SIGTERM)
            wait_until(lambda a=app: not Path(f"/proc/{a}").exists() or _zombie(a), timeout=30)
            app_stop.append(time.perf_counter() - started)
            stack.proc.wait(timeout=30)
            total.append(time.perf_counter() - started)
    overhead = statistics.median(t - a for t, a in zip(total, app_stop, strict=True))
    return {
        "sigterm_to_exit_median_s": round(statistics.median(total), 3),
        "app_own_stop_median_s": round(statistics.median(app_stop), 3),
        "beyond_app_median_s": round(overhead, 3),
        "target_beyond_app_s": 1.0,
        "pass": overhead < 1.0,
    }


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _cpu_seconds(pid: int) -> float:
    """CPU time used, from schedstat (nanoseconds); utime/stime are sampled at the clock tick, which a
    process that wakes briefly and periodically can alias with."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def bench_idle(seconds: float, driver: bool = False) -> dict[str, object]:
    """The launcher side at rest (heygem-launch, supervisord, the wrapper): memory and CPU over `seconds`. `driver`:
    with the tests' stand-in NVIDIA driver on the path, so that the GPU watch runs (a thread asleep in
    nvmlEventSetWait_v2); without it there is no driver and no watch."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = None
        if driver:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests import standin_driver

            folder = standin_driver.install(Path(tmp) / "driver", standin_driver.StandInDriver())
            extra = standin_driver.launcher_env(folder)
        stack = Stack("launcher", Path(tmp) / "idle", extra)
        try:
            app = stack.app()
            time.sleep(2)
            app_tree = {app} | {p for p in stack.descendants() if _is_descendant(p, app)}
            side = [p for p in stack.descendants() if p not in app_tree]
            before = {p: _cpu_seconds(p) for p in side}
            time.sleep(seconds)
            cpu = sum(_cpu_seconds(p) - before[p] for p in side) / seconds * 100
            rss = {_name(p): round(_rss_kb(p) / 1024, 1) for p in side}
            pss = sum(_pss_kb(p) for p in side) / 1024
        finally:
            stack.stop()
    total = sum(rss.values())
    return {
        "processes_rss_mb": rss,
        "rss_total_mb": round(total, 1),
        "pss_total_mb": round(pss, 1),
        "rss_target_mb": IDLE_RSS_TARGET_MB,
        "cpu_percent_of_one_core": round(cpu, 3),
        "cpu_target_percent": 1.0,
        "window_s": seconds,
        "gpu_watch": "on (stand-in driver)" if driver else "off (no driver)",
        "pass": total <= IDLE_RSS_TARGET_MB and cpu < 1.0,
    }


def _is_descendant(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
    return False


def _name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    for label in ("supervisord", "app-wrapper.sh", "launcher"):
        if label in text:
            return label if label != "launcher" else "heygem-launch"
    return text[:40]


def bench_metrics(settle: float = 5.0) -> dict[str, object]:
    """heygem-launch's RSS at rest with HEYGEM_METRICS_PORT off and on (after a scrape), side by side."""
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("off", "on", "off-again", "on-again"):
            port = free_port()
            extra = {"HEYGEM_METRICS_PORT": str(port)} if label.startswith("on") else {}
            stack = Stack("launcher", Path(tmp) / label, extra)
            try:
                stack.app()
                time.sleep(settle)
                if extra:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                        assert b"heygem_ready" in response.read()
                rss[label] = round(_rss_kb(stack.proc.pid) / 1024, 1)
            finally:
                stack.stop()
    off = (rss["off"] + rss["off-again"]) / 2
    on = (rss["on"] + rss["on-again"]) / 2
    return {"launcher_rss_mb": rss, "metrics_cost_mb": round(on - off, 1), "pass": True}


def _counts(pid: int) -> dict[str, int]:
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def bench_metrics_idle(connections: int = 1000, hold: float = 3.0) -> dict[str, object]:
    """`connections` idle TCP connections to the metrics port, held open: heygem-launch's threads and fds
    (issue 20 #9: prometheus-client's server kept one thread and one fd per connection, for ever); then a
    scrape once they are closed, and whether the app was left alone."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 256)), hard))
    port = free_port()
    idle: list[socket.socket] = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack("launcher", Path(tmp) / "idle", {"HEYGEM_METRICS_PORT": str(port)})
        try:
            app = stack.app()
            time.sleep(1)
            before = _counts(stack.proc.pid)
            refused = 0
            for _ in range(connections):
                sock = socket.socket()
                sock.settimeout(1)
                try:
                    sock.connect(("127.0.0.1", port))
                    idle.append(sock)
                except OSError:
                    sock.close()
                    refused += 1
            time.sleep(hold)
            held = _counts(stack.proc.pid)
            for sock in idle:
                sock.close()
            idle.clear()
            time.sleep(1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                scraped = b"heygem_ready" in response.read()
            after = _counts(stack.proc.pid)
            same_app = stack.app() == app
        finally:
            for sock in idle:
                sock.close()
            stack.stop()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {
        "connections": connections,
        "connect_failed": refused,
        "before": before,
        "while_held": held,
        "after": after,
        "scrape_after": scraped,
        "target": "threads and fds grow by at most 9 (the 8 served at once, the listener)",
        "pass": held["threads"] - before["threads"] <= 9 and held["fds"] - before["fds"] <= 9 and scraped and same_app,
    }
