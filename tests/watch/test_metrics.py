"""The metrics endpoint for real: prometheus-client's server on a free port, scraped over HTTP and parsed
with Prometheus' own text parser. GPU figures from an NVML-shaped inventory (no driver on this machine)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from launcher.watch.metrics import Metrics, NoMetrics, make
from tests.harness import free_port, wait_for


@dataclass
class FakeGpu:  # NVML's figures for two GPUs: no CPU machine has them
    index: int
    uuid: str
    utilization_percent: int | None
    memory_used_mib: int


@dataclass
class FakeInventory:
    available: bool
    gpus: list[FakeGpu]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_off_is_nothing() -> None:
    assert type(make(None)) is NoMetrics


def test_counts_states_and_gpus_are_served() -> None:
    port = free_port()
    inventory = FakeInventory(True, [FakeGpu(0, "GPU-a", 87, 1024), FakeGpu(1, "GPU-b", None, 0)])
    metrics = make(port, lambda: inventory)
    assert isinstance(metrics, Metrics)
    metrics.preflight(False, "cuda_libraries_missing")
    metrics.preflight(True, None)
    metrics.ready(True)
    metrics.app_started(1.0)
    for kind in ("blocked", "blocked", "task_failed"):
        metrics.incident(kind)
    metrics.restart()
    metrics.task("done", 59.3, 8.2)
    metrics.task("failed", 0.1, None)
    got = scrape(port)
    app = (("app", "app"),)
    assert got[("heygem_ready", app)] == 1
    assert got[("heygem_preflight_ok", (("app", "app"), ("cause", "")))] == 1
    assert ("heygem_preflight_ok", (("app", "app"), ("cause", "cuda_libraries_missing"))) not in got
    assert got[("heygem_restarts_total", app)] == 1
    assert got[("heygem_incidents_total", (("app", "app"), ("kind", "blocked")))] == 2
    assert got[("heygem_tasks_total", (("app", "app"), ("outcome", "done")))] == 1
    assert got[("heygem_task_seconds_count", app)] == 2
    assert got[("heygem_task_frames_per_second_sum", app)] == 8.2
    assert got[("heygem_app_uptime_seconds", app)] > 1000
    assert got[("heygem_gpu_utilization_percent", (("gpu", "0"), ("uuid", "GPU-a")))] == 87
    assert got[("heygem_gpu_memory_used_bytes", (("gpu", "1"), ("uuid", "GPU-b")))] == 0
    assert ("heygem_gpu_utilization_percent", (("gpu", "1"), ("uuid", "GPU-b"))) not in got


def test_each_app_has_its_own_series() -> None:
    """With HEYGEM_GPUS, one series per app: one app's new preflight cause leaves the other's alone."""
    port = free_port()
    metrics = make(port)
    metrics.preflight(True, None, "app-0")
    metrics.preflight(True, None, "app-1")
    metrics.preflight(False, "cudnn_missing", "app-1")
    metrics.restart("app-1")
    got = scrape(port)
    assert got[("heygem_preflight_ok", (("app", "app-0"), ("cause", "")))] == 1
    assert got[("heygem_preflight_ok", (("app", "app-1"), ("cause", "cudnn_missing")))] == 0
    assert ("heygem_preflight_ok", (("app", "app-1"), ("cause", ""))) not in got
    assert got[("heygem_restarts_total", (("app", "app-1"),))] == 1
    assert ("heygem_restarts_total", (("app", "app-0"),)) not in got


def test_an_app_given_up_has_no_uptime_left() -> None:
    port = free_port()
    metrics = make(port)
    metrics.app_started(1.0, "app-0")
    metrics.app_started(2.0, "app-1")
    metrics.app_started(None, "app-1")
    metrics.app_started(None, "app-1")  # twice: still nothing to remove, no error
    got = scrape(port)
    assert got[("heygem_app_uptime_seconds", (("app", "app-0"),))] > 1000
    assert ("heygem_app_uptime_seconds", (("app", "app-1"),)) not in got
    assert ("heygem_app_start_time_seconds", (("app", "app-1"),)) not in got


def test_counters_are_at_zero_from_the_apps_start() -> None:
    """Prometheus' increase() sees the first restart only if the series existed before it (a newcomer's find)."""
    port = free_port()
    metrics = make(port)
    metrics.app_started(1.0, "app")
    got = scrape(port)
    assert got[("heygem_restarts_total", (("app", "app"),))] == 0
    assert got[("heygem_incidents_total", (("app", "app"), ("kind", "blocked")))] == 0


def test_a_skipped_preflight_is_not_a_pass_and_a_later_check_replaces_it() -> None:
    metrics = Metrics()
    port = free_port()
    metrics.serve(port)
    metrics.preflight(True, None, "app-0", skipped=True)
    got = scrape(port)
    assert got[("heygem_preflight_skipped", (("app", "app-0"),))] == 1
    assert not [key for key in got if key[0] == "heygem_preflight_ok"], "nothing was checked: no pass, no refusal"
    metrics.preflight(True, None, "app-0")  # a restart without HEYGEM_PREFLIGHT=skip, which passed
    got = scrape(port)
    assert got[("heygem_preflight_skipped", (("app", "app-0"),))] == 0
    assert got[("heygem_preflight_ok", (("app", "app-0"), ("cause", "")))] == 1


def _scraped(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        return scrape(port)
    except OSError:  # not served yet
        return None


def test_the_service_with_the_preflight_skipped_serves_skipped_not_ok(launch_service) -> None:  # type: ignore[no-untyped-def]
    """HEYGEM_PREFLIGHT=skip with CUDA required (it cannot pass here). Bug: `heygem_preflight_ok{cause=""} 1`."""
    port = free_port()
    env = {
        "HEYGEM_PREFLIGHT": "skip",
        "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider",
        "HEYGEM_GPU_GRACE": "600",
        "HEYGEM_METRICS_PORT": str(port),
    }
    service = launch_service(env=env)
    service.wait_app()
    got = wait_for(lambda: _scraped(port), 20, "the metrics")
    assert got[("heygem_preflight_skipped", (("app", "app"),))] == 1
    assert not [key for key in got if key[0] == "heygem_preflight_ok"]
