"""A real Prometheus server (Debian's `prometheus`, which scripts/test.sh installs) scrapes the launcher's
metrics endpoint while the real service runs the HeyGem-like app; queried through Prometheus' HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.system.ports import listening_inodes
from tests import harness
from tests.harness import free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus server (scripts/test.sh installs it)")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(metrics port to scrape, Prometheus' own port), the server scraping every second."""
    metrics_port, web_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: heygem\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    assert PROMETHEUS is not None
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield metrics_port, web_port
    finally:
        server.terminate()
        server.wait(timeout=20)


def query(web_port: int, expr: str) -> dict[str, float]:
    """Each series' value, keyed by its labels as JSON."""
    url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)
    except OSError:
        return {}
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in data["data"]["result"]}


def test_prometheus_sees_restarts_and_incidents(tmp_path: Path, ort_env: Path, prometheus: tuple[int, int]) -> None:
    metrics_port, web_port = prometheus
    service = harness.start(tmp_path, ort_env, env={"HEYGEM_METRICS_PORT": str(metrics_port)})
    try:
        first = service.wait_app()
        wait_for(lambda: query(web_port, 'heygem_ready{job="heygem"} == 1'), 60, "Prometheus to see the app ready")
        assert list(query(web_port, "heygem_restarts_total").values()) in ([], [0.0])
        os.kill(first["pid"], signal.SIGKILL)
        service.wait_app(timeout=20, not_pid=first["pid"])
        wait_for(lambda: list(query(web_port, "heygem_restarts_total").values()) == [1.0], 30, "the restart counted")
        service.get("/emit/queue-full")
        wait_for(lambda: query(web_port, 'heygem_incidents_total{kind="blocked"}'), 30, "the blocked incident counted")
        (preflight,) = query(web_port, "heygem_preflight_ok").items()
        assert "cause" not in json.loads(preflight[0]) and preflight[1] == 1  # passed: no cause (an empty label)
        assert query(web_port, "heygem_app_uptime_seconds")
    finally:
        service.signal(signal.SIGTERM)
        service.wait(timeout=20)
        service.cleanup()


def test_prometheus_sees_each_app_on_its_own(launch_service, prometheus: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_GPUS=2 on this CPU machine (HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider): a kill of one app
    counts against that app only."""
    metrics_port, web_port = prometheus
    port = harness.free_ports(2)
    env = {"HEYGEM_METRICS_PORT": str(metrics_port), "HEYGEM_GPUS": "2", "HEYGEM_APP_PORT": str(port)}
    service = launch_service(env={**env, "GRADIO_SERVER_PORT": None})

    def both_ready() -> bool:
        service.assert_alive()  # a launcher that exited fails at once, with its stderr
        return len(query(web_port, "heygem_ready == 1")) == 2

    wait_for(both_ready, 90, "Prometheus to see both apps ready")
    second = wait_for(lambda: harness.get(port + 1), 30, "the second app")
    os.kill(second["pid"], signal.SIGKILL)
    wait_for(lambda: query(web_port, 'heygem_restarts_total{app="app-1"} == 1'), 30, "app-1's restart counted")
    assert not query(web_port, 'heygem_restarts_total{app="app-0"} > 0')


def test_a_busy_metrics_port_is_refused(tmp_path: Path, ort_env: Path) -> None:
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)])
    try:
        wait_for(lambda: listening_inodes(port), 10, "the holder to listen")
        service = harness.start(tmp_path, ort_env, env={"HEYGEM_METRICS_PORT": str(port)})
        assert service.wait(timeout=60) == 78
        assert f"HEYGEM_METRICS_PORT={port}: already in use by pid {holder.pid}" in service.stderr()
        assert "Traceback" not in service.stderr()
    finally:
        holder.kill()
        holder.wait()
