"""Benchmarks, measured side by side in one run. Usage: python bench/run.py [--rounds N] [--only NAME ...]

preflight: `heygem-launch --check-only` against the naive check
           `python -c "import onnxruntime; print(onnxruntime.get_available_providers())"`, interleaved,
           medians; target ratio <= 1.25 (issue 15). Beside them the floor (bench/floor.py: an interpreter
           that only spawns the same probe with its inputs computed beforehand, and waits). Also the
           launcher's own peak RSS (VmHWM of its process, the probe child excluded): target <= 40 MB.
preflight-1.16: the same, with HeyGem's build: onnxruntime-gpu 1.16.3 in a Python 3.8 env (the tests' cached
           env, tests/envs.py; built on first use), checked with `--conda-env`; the naive check runs in
           that env's python.
respawn:   kill -9 of the running app -> a new app process, heygem-launch's stack against supervisord alone
           with the same app, interleaved; target median < 0.5 s.
stop:      SIGTERM -> heygem-launch exits, with a well-behaved app; target < 1 s beyond the app's own stop.
idle:      heygem-launch, supervisord and the wrapper at rest: RSS <= 50 MB in all (issue 15; PSS reported too),
           CPU < 1% of one core over --idle-seconds (default 60). idle-gpu-watch: the same with the
           tests' stand-in NVIDIA driver on the path, so that the GPU watch runs: unchanged, as its thread sleeps in
           the driver (no polling).
detect:    the queue-full line -> a new app process (target median < 2 s); a stall -> a new app process
           (HEYGEM_STALL_SECONDS=3 here; target < 3 + 2 s).
probes:    `heygem-launch probe live|ready|startup` on a ready service (target median < 0.3 s).
flood:     the launcher side's CPU while the app writes 200 records/s (each to its log and to stderr),
           beside the same processes at rest, same run; target: heygem-launch at most 1% of one core.
metrics:   heygem-launch's RSS at rest with HEYGEM_METRICS_PORT off and on (after a scrape), twice each.
metrics-idle: 1,000 idle TCP connections held open to the metrics port: heygem-launch's threads and fds grow
           by at most 9 (8 served at once, each for at most 10 s; the rest closed at once), a scrape after.
preflight-gpus: `--check-only` with HEYGEM_GPUS=2 (two probes, each pinned to its GPU, in parallel) against one
           app's, interleaved, medians (HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider, so both probes run
           to the end); target ratio <= 1.5: the second GPU must not cost a second preflight.
long-lines: 1 GiB of 1 MiB lines into the app's log, then a queue-full line: the launcher's RSS growth
           (target < 5 MB) and the incident file's size (target < 1 MB).
audit:     the session audit's cost in the app's processes: interpreter start (target < 5 ms), per session
           creation, per run(), with against without, on 1.16.3 / Python 3.8 and 1.31 / 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from audit import bench_audit
from service import bench_idle, bench_metrics, bench_metrics_idle, bench_respawn, bench_stop
from watch import bench_detect, bench_flood, bench_long_lines, bench_probes

PY = sys.executable
NAIVE_CODE = "import onnxruntime; print(onnxruntime.get_available_providers())"
NAIVE = [PY, "-c", NAIVE_CODE]
# The command people run: pip's console script beside this python (what `python -m launcher` also runs, after
# runpy's ~4 ms).
_SCRIPT = Path(PY).with_name("heygem-launch")
LAUNCH = [str(_SCRIPT) if _SCRIPT.exists() else PY, *([] if _SCRIPT.exists() else ["-m", "launcher"]), "--check-only"]
FLOOR = str(Path(__file__).resolve().with_name("floor.py"))
RATIO_TARGET = 1.25  # --check-only against the naive check (issue 15; 2.0 before)


def launch_rss(args: list[str]) -> list[str]:
    """Runs the launcher in this process and reports its own peak RSS; children have their own accounting."""
    return [
        PY,
        "-c",
        (
            "import atexit, runpy, sys\n"
            "def hwm():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM'): sys.stderr.write('HWM_KB ' + line.split()[1] + '\\n')\n"
            "atexit.register(hwm)\n"
            f"sys.argv = ['heygem-launch', '--check-only', *{args!r}]\n"
            "runpy.run_module('launcher', run_name='__main__')\n"
        ),
    ]


def timed(cmd: list[str], cwd: str, expect: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in expect:  # a fast crash is no result
        raise SystemExit(f"{cmd[:3]} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def floor_command(app: str, flags: dict[str, str]) -> list[str]:
    """bench/floor.py with the probe's inputs as the launcher computes them (launcher/preflight/early.py)."""
    import marshal

    from launcher.preflight import early

    inputs = early.probe_inputs(flags, os.environ, app)
    if inputs is None:
        raise SystemExit("the early probe declines this configuration: no floor to measure")
    python, provider, env, cwd = inputs
    path = Path(app, "floor-inputs.marshal")
    path.write_bytes(marshal.dumps((python, provider, env, cwd, early.CHILD, early.MODEL)))
    return [PY, FLOOR, str(path)]


def bench_preflight(
    rounds: int, env_python: str = PY, conda_env: str = "", baseline: str | None = None
) -> dict[str, object]:
    """`baseline`: a folder holding another version of the package (`pip install --no-deps --target DIR REF`), run
    the same way with PYTHONPATH=DIR, interleaved with the rest."""
    args = ("--conda-env", conda_env) if conda_env else ()
    naive_cmd, launch_cmd = [env_python, "-c", NAIVE_CODE], [*LAUNCH, *args]
    with tempfile.TemporaryDirectory() as app:
        Path(app, "app.py").write_text("")  # the preflight checks that the app's script exists
        verdicts = (0, 69)  # passed or refused: both are answers; anything else is a failure
        floor_cmd = floor_command(app, {"HEYGEM_CONDA_ENV": conda_env} if conda_env else {})
        timed(naive_cmd, app), timed(launch_cmd, app, verdicts), timed(floor_cmd, app)  # warm the page cache
        naive, launch, floor, base = [], [], [], []
        base_env = None if baseline is None else {**os.environ, "PYTHONPATH": baseline}
        for _ in range(rounds):  # interleaved, so drift hits all alike
            naive.append(timed(naive_cmd, app))
            launch.append(timed(launch_cmd, app, verdicts))
            floor.append(timed(floor_cmd, app))
            if base_env is not None:
                base.append(timed(launch_cmd, app, verdicts, env=base_env))
        hwm = []
        for _ in range(3):
            err = subprocess.run(launch_rss(list(args)), cwd=app, capture_output=True, text=True, check=False).stderr
            hwm += [int(line.split()[1]) for line in err.splitlines() if line.startswith("HWM_KB")]
    ratio = statistics.median(launch) / statistics.median(naive)
    rss_mb = max(hwm) / 1024
    return {
        "naive_median_s": round(statistics.median(naive), 3),
        "check_only_median_s": round(statistics.median(launch), 3),
        "ratio": round(ratio, 2),
        "ratio_target": RATIO_TARGET,
        # The floor (bench/floor.py): the launcher's interpreter and the probe alone, against the naive check.
        "floor_median_s": round(statistics.median(floor), 3),
        "floor_ratio": round(statistics.median(floor) / statistics.median(naive), 2),
        "launcher_peak_rss_mb": round(rss_mb, 1),
        "rss_target_mb": 40,
        "pass": ratio <= RATIO_TARGET and rss_mb <= 40,
        **({"baseline_median_s": round(statistics.median(base), 3)} if base else {}),
        **({"baseline_ratio": round(statistics.median(base) / statistics.median(naive), 2)} if base else {}),
    }


def bench_preflight_116(rounds: int, baseline: str | None = None) -> dict[str, object]:
    from tests import envs

    build = envs.BUILDS[0]
    prefix = envs.build_env(build, "gpu")
    result = bench_preflight(rounds, str(prefix / "bin" / "python"), str(prefix), baseline)
    return {"build": f"onnxruntime-gpu {build.version}, Python 3.8", **result}


def bench_preflight_gpus(rounds: int) -> dict[str, object]:
    base = {**os.environ, "HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider"}
    two = {**base, "HEYGEM_GPUS": "2"}
    with tempfile.TemporaryDirectory() as app:
        Path(app, "app.py").write_text("")
        timed(LAUNCH, app, env=base), timed(LAUNCH, app, env=two)  # warm the page cache
        one_app, two_apps = [], []
        for _ in range(rounds):
            one_app.append(timed(LAUNCH, app, env=base))
            two_apps.append(timed(LAUNCH, app, env=two))
    ratio = statistics.median(two_apps) / statistics.median(one_app)
    return {
        "one_app_median_s": round(statistics.median(one_app), 3),
        "two_gpus_median_s": round(statistics.median(two_apps), 3),
        "ratio": round(ratio, 2),
        "ratio_target": 1.5,
        "pass": ratio <= 1.5,
    }


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, object]]] = {
    "preflight": lambda a: bench_preflight(a.rounds, baseline=a.baseline),
    "preflight-1.16": lambda a: bench_preflight_116(a.rounds, a.baseline),
    "preflight-gpus": lambda a: bench_preflight_gpus(a.rounds),
    "respawn": lambda a: bench_respawn(min(a.rounds, 10)),
    "stop": lambda a: bench_stop(min(a.rounds, 7)),
    "idle": lambda a: bench_idle(a.idle_seconds),
    "idle-gpu-watch": lambda a: bench_idle(a.idle_seconds, driver=True),
    "detect": lambda a: bench_detect(min(a.rounds, 7)),
    "probes": lambda a: bench_probes(a.rounds),
    "flood": lambda a: bench_flood(min(a.idle_seconds, 30)),
    "metrics": lambda a: bench_metrics(),
    "metrics-idle": lambda a: bench_metrics_idle(),
    "long-lines": lambda a: bench_long_lines(),
    "audit": lambda a: bench_audit(a.rounds),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES))
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--baseline", help="preflight benches: also time the package installed in this folder (PYTHONPATH), interleaved"
    )
    args = parser.parse_args()
    os.environ.pop("LD_LIBRARY_PATH", None)
    results = {}
    for name in args.only or BENCHES:
        results[name] = BENCHES[name](args)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count(), "results": results}, indent=2))
    return 0 if all(r.get("pass") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
