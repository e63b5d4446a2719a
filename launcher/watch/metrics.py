"""Prometheus metrics from the launcher's own process (prometheus-client), on HEYGEM_METRICS_PORT.

Off when the setting is empty: `NoMetrics` has the same methods and imports nothing, so the idle launcher
pays nothing for them. On, they are served read-only (the control socket stays a private unix socket) by a
small server of our own around `generate_latest`: prometheus-client's `start_http_server` keeps a thread and
an fd per connection for as long as the client likes, and idle connections from anyone who can reach the
port would exhaust the launcher's fds. Here at most MAX_CONNECTIONS are served at once (more are closed at
once), each for at most CONNECTION_SECONDS. Per app (`app` label: `app` when there is one, `app-0`, `app-1`, …
with HEYGEM_GPUS); not `instance`, which Prometheus sets to the scraped target and would rename ours.
GPU utilisation and memory are read from NVML when Prometheus scrapes, and only where a driver is.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from launcher.watch.watchdog import BLOCKED, CPU_FALLBACK, CUDA_STICKY, GPU_FAULT, GPU_XID, STALL, TASK_FAILED

PREFIX = "heygem"
TASK_SECONDS = (5, 15, 30, 60, 120, 300, 600, 1200, 3600)  # HeyGem: ~60 s for 150 frames on a GPU
FPS_BUCKETS = (0.5, 1, 2, 4, 6, 8, 10, 15, 25)  # ~8.7 frames/s on a GPU, ~0.4 on the CPU (FIELD.md)


MAX_CONNECTIONS = 8  # served at once: Prometheus needs one; threads and fds stay bounded whatever connects
CONNECTION_SECONDS = 10.0  # a connection's whole life, however slowly its client sends
READ_SECONDS = 5.0  # a read that waits longer ends the connection


class NoMetrics:
    """HEYGEM_METRICS_PORT is empty: every call does nothing."""

    place: tuple[str, int] | None = None

    def close(self) -> None: ...

    def preflight(self, ok: bool, cause: str | None, instance: str = "app", *, skipped: bool = False) -> None: ...
    def ready(self, ready: bool, instance: str = "app") -> None: ...
    def app_started(self, at: float | None, instance: str = "app") -> None: ...
    def restart(self, instance: str = "app") -> None: ...
    def backoff(self, seconds: float, instance: str = "app") -> None: ...
    def incident(self, kind: str, instance: str = "app") -> None: ...
    def task(self, outcome: str, seconds: float | None, fps: float | None, instance: str = "app") -> None: ...
    def sessions(self, counts: Mapping[str, int], instance: str = "app") -> None: ...
    def gpu_xid(self, gpu: int, xid: int) -> None: ...
    def gpu_lost(self, gpu: int) -> None: ...


class Metrics(NoMetrics):
    def __init__(self, gpus: Callable[[], Any] | None = None) -> None:
        """`gpus`: returns an inventory like `launcher.system.gpu.inventory()` (read at each scrape)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.server: _Server | None = None
        labels = ["app"]
        self._ready = Gauge(f"{PREFIX}_ready", "1 when the app is ready (both workers up)", labels, registry=registry)
        self._preflight = Gauge(
            f"{PREFIX}_preflight_ok",
            "1 when the last preflight passed, 0 with its cause when it refused; absent when it was skipped",
            [*labels, "cause"],
            registry=registry,
        )
        self._skipped = Gauge(
            f"{PREFIX}_preflight_skipped",
            "1 when the app started without the preflight (HEYGEM_PREFLIGHT=skip): nothing was checked",
            labels,
            registry=registry,
        )
        self._started = Gauge(
            f"{PREFIX}_app_start_time_seconds", "when the running app process started", labels, registry=registry
        )
        self._restarts = Counter(f"{PREFIX}_restarts", "app restarts (crashes and cures)", labels, registry=registry)
        self._incidents = Counter(f"{PREFIX}_incidents", "incidents by kind", [*labels, "kind"], registry=registry)
        self._tasks = Counter(f"{PREFIX}_tasks", "tasks by outcome", [*labels, "outcome"], registry=registry)
        self._seconds = Histogram(
            f"{PREFIX}_task_seconds", "a task's duration", labels, buckets=TASK_SECONDS, registry=registry
        )
        self._fps = Histogram(
            f"{PREFIX}_task_frames_per_second", "a task's frame rate", labels, buckets=FPS_BUCKETS, registry=registry
        )
        self._xids = Counter(f"{PREFIX}_gpu_xid", "NVML's XID events by GPU and XID", ["gpu", "xid"], registry=registry)
        self._lost = Gauge(
            f"{PREFIX}_gpu_lost",
            "1 once NVML said the GPU is lost (or Unknown Error) while the apps ran",
            ["gpu"],
            registry=registry,
        )
        self._backoff = Gauge(
            f"{PREFIX}_restart_backoff_seconds",
            "the wait before the app is started again after a crash or an incident (HEYGEM_RESTART_DELAY); 0: none",
            labels,
            registry=registry,
        )
        self._causes: dict[str, str] = {}
        self._running: set[str] = set()  # apps with a start time and an uptime
        self._uptime = Gauge(
            f"{PREFIX}_app_uptime_seconds", "seconds the running app has been up", labels, registry=registry
        )
        self._sessions = Gauge(
            f"{PREFIX}_onnx_sessions",
            "ONNX Runtime sessions of the running app by the provider ONNX Runtime gave them (the session audit)",
            [*labels, "provider"],
            registry=registry,
        )
        self._providers_seen: dict[str, set[str]] = {}
        if gpus is not None:
            self.registry.register(_GpuCollector(gpus))

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Start the HTTP endpoint (a daemon thread). Raises OSError when the port cannot be bound."""
        self.close()
        self.server = _Server((address, port), self.registry)
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()
        self.place = (address, port)

    def close(self) -> None:
        server, self.server, self.place = self.server, None, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def preflight(self, ok: bool, cause: str | None, instance: str = "app", *, skipped: bool = False) -> None:
        # One series per instance: the cause it had before goes, the other instances' stay. A skipped
        # preflight has none: nothing was checked, and a 1 (or a 0) would claim a pass (or a refusal).
        old = self._causes.get(instance)
        if old is not None and (skipped or old != (cause or "")):
            self._preflight.remove(instance, old)
            del self._causes[instance]
        self._skipped.labels(instance).set(1 if skipped else 0)
        if not skipped:
            self._causes[instance] = cause or ""
            self._preflight.labels(instance, cause or "").set(1 if ok else 0)

    def ready(self, ready: bool, instance: str = "app") -> None:
        self._ready.labels(instance).set(1 if ready else 0)

    def app_started(self, at: float | None, instance: str = "app") -> None:
        """The app's process started at `at` (epoch seconds); None: it no longer runs (given up)."""
        if at is None:
            if instance in self._running:
                self._running.discard(instance)
                self._uptime.remove(instance)
                self._started.remove(instance)
            return
        self._running.add(instance)
        # The counters exist at 0 from the app's start: Prometheus' increase() then sees the first one.
        self._restarts.labels(instance)
        self._backoff.labels(instance)
        for kind in (BLOCKED, STALL, TASK_FAILED, CPU_FALLBACK, CUDA_STICKY, GPU_XID, GPU_FAULT):
            self._incidents.labels(instance, kind)
        self._started.labels(instance).set(at)
        self._uptime.labels(instance).set_function(lambda: time.time() - at)

    def restart(self, instance: str = "app") -> None:
        self._restarts.labels(instance).inc()

    def backoff(self, seconds: float, instance: str = "app") -> None:
        self._backoff.labels(instance).set(seconds)

    def incident(self, kind: str, instance: str = "app") -> None:
        self._incidents.labels(instance, kind).inc()

    def sessions(self, counts: Mapping[str, int], instance: str = "app") -> None:
        """The app's current sessions per provider; a provider it no longer has reads 0 (a new app process)."""
        seen = self._providers_seen.setdefault(instance, set())
        seen.update(counts)
        for provider in seen:
            self._sessions.labels(instance, provider).set(counts.get(provider, 0))

    def task(self, outcome: str, seconds: float | None, fps: float | None, instance: str = "app") -> None:
        self._tasks.labels(instance, outcome).inc()
        if seconds is not None:
            self._seconds.labels(instance).observe(seconds)
        if fps is not None:
            self._fps.labels(instance).observe(fps)

    def gpu_xid(self, gpu: int, xid: int) -> None:
        self._xids.labels(str(gpu), str(xid)).inc()

    def gpu_lost(self, gpu: int) -> None:
        self._lost.labels(str(gpu)).set(1)


class _Handler(BaseHTTPRequestHandler):
    timeout = READ_SECONDS  # StreamRequestHandler sets it on the socket
    server: _Server

    def do_GET(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape would bury the launcher's own


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them, none older than CONNECTION_SECONDS."""

    daemon_threads = True
    block_on_close = False  # closing never waits for an idle client
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], registry: Any) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.live: dict[socket.socket, float] = {}
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            full = len(self.live) >= MAX_CONNECTIONS
            if not full:
                self.live[request] = time.monotonic() + CONNECTION_SECONDS
        if full:
            self.shutdown_request(request)  # closed at once: its fd is not kept
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.live.pop(request, None)

    def service_actions(self) -> None:
        """Each poll of serve_forever (0.5 s): end connections past their life (a client sending a byte a
        few seconds would otherwise keep its thread for ever)."""
        now = time.monotonic()
        with self.lock:
            old = [sock for sock, deadline in self.live.items() if deadline < now]
        for sock in old:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away is no error of ours, and stderr is the launcher's


class _GpuCollector:
    def __init__(self, gpus: Callable[[], Any]) -> None:
        self.gpus = gpus

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        inventory = self.gpus()
        util = GaugeMetricFamily(f"{PREFIX}_gpu_utilization_percent", "NVML's GPU utilisation", labels=["gpu", "uuid"])
        used = GaugeMetricFamily(f"{PREFIX}_gpu_memory_used_bytes", "NVML's used GPU memory", labels=["gpu", "uuid"])
        for g in inventory.gpus if inventory.available else []:
            if g.utilization_percent is not None:
                util.add_metric([str(g.index), g.uuid], g.utilization_percent)
            used.add_metric([str(g.index), g.uuid], g.memory_used_mib * 2**20)
        yield util
        yield used


def make(port: int | None, gpus: Callable[[], Any] | None = None, address: str = "0.0.0.0") -> NoMetrics:
    """Metrics served on `address`:`port`, or nothing when `port` is None. Raises OSError when it is taken."""
    if port is None:
        return NoMetrics()
    metrics = Metrics(gpus)
    metrics.serve(port, address)
    return metrics
