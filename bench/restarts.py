"""Many restarts in a row: the launcher's fd count and RSS must stay flat, and nothing may be left behind.

    python bench/restarts.py [--count 1000] [--json]

Runs the real stack (heygem-launch, supervisord, the wrapper, tests/heygem_like_app.py) with the CPU provider
and `HEYGEM_PREFLIGHT=skip` (the probe is a separate process and leaves nothing in the launcher; skipping it
keeps 1,000 restarts near a quarter of an hour), then sends SIGHUP COUNT times, each time waiting for the
restart's answer in RUN_DIR/restart.json (the new app ready). After a warm-up of WARMUP restarts it samples
the launcher's open fds and RSS; at the end it counts the app's processes (1 main + 2 workers expected) and
the zombies under the launcher or supervisord. Prints one line per figure, or one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "tests" / "heygem_like_app.py"
WARMUP = 10
_SCRIPT = Path(sys.executable).parent / "heygem-launch"
LAUNCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "launcher"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stat_of(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat_of(int(name))
            if st and st[1] == pid:
                found.append(int(name))
    return found


def app_group(run_dir: Path) -> list[int]:
    """The live processes of the app's process group (the wrapper, the app, its workers), from state.json."""
    try:
        wrapper = json.loads((run_dir / "state.json").read_text())["wrapper_pid"]
    except (OSError, ValueError, KeyError):
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if wrapper and int(fields[2]) == wrapper and fields[0] != "Z":
                found.append(int(name))
    return found


def port_users(port: int) -> list[int]:
    """Processes started with this run's port in their environment: what would be an orphan after the stop."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if f"GRADIO_SERVER_PORT={port}".encode() in Path(f"/proc/{name}/environ").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"restarts: timed out waiting for {what}")


def answer(run_dir: Path) -> dict | None:  # type: ignore[type-arg]
    try:
        return json.loads((run_dir / "restart.json").read_text())
    except (OSError, ValueError):
        return None


def measure(count: int, conda_env: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="heygem-restarts-") as tmp:
        base = Path(tmp)
        (base / "app").mkdir()
        run_dir = base / "run"
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HEYGEM_", "LD_", "CONDA_"))},
            "HEYGEM_CONDA_ENV": str(conda_env),
            "HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider",
            "HEYGEM_PREFLIGHT": "skip",
            "HEYGEM_APP_COMMAND": f"python {APP}",
            "HEYGEM_RUN_DIR": str(run_dir),
            "HEYGEM_START_SECONDS": "0",
            "HEYGEM_STOP_GRACE": "3",
            "GRADIO_SERVER_PORT": str(port),
        }
        with open(base / "out", "wb") as out, open(base / "err", "wb") as err:
            proc = subprocess.Popen(LAUNCH, cwd=base / "app", env=env, stdout=out, stderr=err)
        try:
            wait(lambda: b"app ready" in (base / "err").read_bytes(), 60, "the first app to be ready")
            group_at_start = len(app_group(run_dir))
            samples: list[tuple[int, int, int]] = []
            started = time.monotonic()
            last = None
            for n in range(1, count + 1):
                before = answer(run_dir)
                last = before["finished_at"] if before else None
                proc.send_signal(signal.SIGHUP)
                result = wait(
                    lambda last=last: (a := answer(run_dir)) and a.get("finished_at") != last and a,
                    120,
                    f"restart {n}",
                )
                if not result.get("ok"):
                    raise SystemExit(f"restarts: restart {n} failed: {result.get('message')}")
                if proc.poll() is not None:
                    raise SystemExit(f"restarts: heygem-launch exited {proc.returncode} at restart {n}")
                if n in (WARMUP, count) or n % 50 == 0:
                    samples.append((n, fds(proc.pid), rss_kb(proc.pid)))
            elapsed = time.monotonic() - started
            supervisord = [c for c in children(proc.pid) if (st := stat_of(c)) and st[0] != "Z"]
            zombies = [
                c
                for parent in [proc.pid, *supervisord]
                for c in children(parent)
                if (st := stat_of(c)) and st[0] == "Z"
            ]
            apps = len(app_group(run_dir))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        left = port_users(port)
    first = next(s for s in samples if s[0] >= min(WARMUP, count))
    final = samples[-1]
    return {
        "restarts": count,
        "seconds": round(elapsed, 1),
        "per_restart_s": round(elapsed / count, 3),
        "fds_after_warmup": first[1],
        "fds_at_end": final[1],
        "fd_growth": final[1] - first[1],
        "rss_after_warmup_kb": first[2],
        "rss_at_end_kb": final[2],
        "rss_growth_kb": final[2] - first[2],
        "samples": samples,
        "app_group_at_start": group_at_start,
        "app_group_at_end": apps,
        "zombies": len(zombies),
        "exit_code": code,
        "left_after_stop": len(left),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--conda-env", default=sys.prefix, help="the app's env (default: this interpreter's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.count, Path(args.conda_env))
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        if key != "samples":
            print(f"{key:24} {value}")
    print("samples (restart, fds, rss kB):", figures["samples"])


if __name__ == "__main__":
    main()
