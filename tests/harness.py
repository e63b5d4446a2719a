"""Start the real heygem-launch (real supervisord, the HeyGem-like app, real signals), optionally as it runs in
the container: in a new PID namespace with tini as PID 1 (`unshare --pid --fork --mount-proc`)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import LAUNCH, clean_environ

REPO = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().parent / "heygem_like_app.py"
T = TypeVar("T")


def can_make_pid_namespace() -> bool:
    """`unshare --pid` needs CAP_SYS_ADMIN (root here and in CI)."""
    try:
        return (
            subprocess.run(
                ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """A port p with p .. p + count - 1 all free now (the apps of HEYGEM_GPUS get HEYGEM_APP_PORT + i), taken
    below the kernel's ephemeral range, where outgoing connections (Prometheus' scrapes) would land."""
    low, _high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for start in range(20000, low - count, 97):
        sockets = []
        try:
            for port in range(start, start + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports below {low}")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll until `check()` is truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def gone(pid: int) -> bool:
    """No such process, or only a zombie (its memory, GPU memory included, is released)."""
    return proc_state(pid) in (None, "Z")


def probes_of(env: Path) -> list[int]:
    """The live probes the launcher started with `env`'s python: `ENV/bin/python -` (one per GPU with HEYGEM_GPUS)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].startswith(str(env).encode()) and argv[1:2] == [b"-"] and not gone(int(name)):
                found.append(int(name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as the kernel holds it (/proc/PID/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def host_pid(ns_pid: int, pid_ns: str) -> int | None:
    """The pid, as this process sees it, of `ns_pid` inside the PID namespace `pid_ns`."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != pid_ns:
                continue
            for line in Path(f"/proc/{name}/status").read_text().splitlines():
                if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                    return int(name)
        except (OSError, ValueError):
            continue
    return None


def get(port: int, path: str = "/") -> dict[str, Any] | None:
    """The HeyGem-like app's answer on `port`, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError):  # refused, or cut off by a restart mid-answer
        return None


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    app_dir: Path
    run_dir: Path
    out: Path
    err: Path
    namespace: str | None

    def get(self, path: str = "/") -> dict[str, Any] | None:
        return get(self.port, path)

    def wait_app(self, timeout: float = 30, not_pid: int | None = None) -> dict[str, Any]:
        def answered() -> dict[str, Any] | None:
            self.assert_alive()
            info = self.get()
            return info if info and info.get("pid") != not_pid else None

        return wait_for(
            answered, timeout, "the app to answer" + (f" with a pid other than {not_pid}" if not_pid else "")
        )

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"heygem-launch exited {self.proc.returncode}: {self.stderr()[-2000:]}")

    def pid_ns(self) -> str:
        # unshare --fork: its child is PID 1 of the new namespace.
        child = wait_for(lambda: _first_child(self.proc.pid), 10, "unshare's child")
        return os.readlink(f"/proc/{child}/ns/pid")

    def host(self, pid: int) -> int:
        """A pid the app reported, as a pid we can signal."""
        if self.namespace is None:
            return pid
        found = host_pid(pid, self.pid_ns())
        assert found is not None, f"no process {pid} in the service's PID namespace"
        return found

    def pid1(self) -> int:
        """What receives the container's signals: tini (or heygem-launch as PID 1), or heygem-launch itself."""
        return _first_child(self.proc.pid) if self.namespace else self.proc.pid  # type: ignore[return-value]

    def signal(self, signum: int) -> None:
        os.kill(self.pid1(), signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def cleanup(self) -> None:
        """Leave nothing behind: SIGKILL to a namespace's PID 1 takes the whole namespace with it."""
        if self.proc.poll() is None:
            if self.namespace and self.pid1():
                self.signal(signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(timeout=10)


def _first_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def start(
    tmp_path: Path,
    conda_env: Path,
    *,
    mode: str = "normal",
    namespace: str | None = None,
    env: dict[str, str | None] | None = None,
    args: tuple[str, ...] = (),
    cwd: Path | None = None,
    stdout: int | None = None,
    shell: str | None = None,
) -> Service:
    """heygem-launch with the HeyGem-like app; namespace None, "tini" (as in the image) or "pid1".

    `env` overrides the environment; a None value removes a key, to leave it to the .env file. `cwd` (default
    the app dir) is where heygem-launch itself starts. `stdout`: an fd for its stdout instead of a file (a
    pipe the test holds). `shell`: redirections it starts with, through sh's exec (`>&-`: fd 1 closed)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir(exist_ok=True)
    run_dir = tmp_path / "run"
    port = free_port()
    environ = clean_environ(
        HEYGEM_CONDA_ENV=str(conda_env),
        HEYGEM_REQUIRE_PROVIDER="CPUExecutionProvider",
        HEYGEM_APP_COMMAND=f"python {APP}",
        HEYGEM_RUN_DIR=str(run_dir),
        HEYGEM_STOP_GRACE="3",
        HEYGEM_START_SECONDS="1",
        GRADIO_SERVER_PORT=str(port),
        TEST_APP_MODE=mode,
        PATH=f"{Path(LAUNCH[0]).parent}:{os.environ['PATH']}",
    )
    for key, value in (env or {}).items():  # None: leave the key to the .env file
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    if namespace == "tini":
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "tini", "-g", "--", "sh", str(REPO / "entrypoint.sh")]
    elif namespace == "pid1":
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", *LAUNCH]
    else:
        cmd = [*LAUNCH]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    if shell is not None:
        cmd = ["sh", "-c", f'exec "$@" {shell}', "sh", *cmd]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*cmd, *args],
            cwd=cwd or app_dir,
            env=environ,
            stdout=o if stdout is None else stdout,
            stderr=e,
            stdin=subprocess.DEVNULL,
        )
    return Service(proc, port, app_dir, run_dir, out, err, namespace)


def control(svc: Service, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`heygem-launch ARGS` as from `docker exec`: the container's settings (its .env file beside the run dir),
    another process."""
    env = clean_environ(
        HEYGEM_RUN_DIR=str(svc.run_dir),
        HEYGEM_ENV_FILE=str(svc.run_dir.parent / "heygem.env"),
        HEYGEM_APP_DIR=str(svc.app_dir),
    )
    try:
        return subprocess.run([*LAUNCH, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        # What the service logged is what tells why it did not answer (CI stop 12 had only the timeout).
        tail = svc.err.read_text(errors="replace")[-4000:] if svc.err.exists() else "(no stderr file)"
        raise AssertionError(
            f"heygem-launch {' '.join(args)}: no answer in {timeout:g} s; the service's stderr:\n{tail}"
        ) from None
