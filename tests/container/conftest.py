"""Real containers: the launcher image (tests/container/images.py) run with podman, driven from the outside with
`podman run`, `exec`, `healthcheck run`, `stop`, `wait` and `podman-compose`, as an operator would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.container import images
from tests.container.images import podman
from tests.harness import gone, wait_for


def unusable_reason() -> str | None:
    """Why podman cannot run a container here, or None. scripts/test.sh installs what is missing, as root."""
    for tool in ("podman", "mmdebstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test.sh installs podman, runc and mmdebstrap as root)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """The launcher image over the stand-in HeyGem image, built (or found in the cache) once per session."""
    reason = unusable_reason()
    if reason:
        pytest.skip(reason)
    debian = images.debian_image()
    tried = podman("run", "--rm", debian, "true", timeout=120, check=False)
    if tried.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {tried.stderr.strip()[-500:]}")
    return images.launcher_image()


@dataclass
class Container:
    name: str
    config: Path
    started: float = field(default_factory=time.monotonic)

    def exec(self, *args: str, timeout: float = 120) -> Any:
        return podman("exec", self.name, *args, timeout=timeout, check=False)

    def launch(self, *args: str, timeout: float = 120) -> Any:
        return self.exec("heygem-launch", *args, timeout=timeout)

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def health(self) -> int:
        """`podman healthcheck run`: the image's HEALTHCHECK (`heygem-launch probe ready`), 0 healthy, 1 not."""
        return podman("healthcheck", "run", self.name, timeout=60, check=False).returncode

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def status(self) -> dict[str, Any]:
        result = self.launch("status", "--json")
        return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}

    def app_pid(self) -> int | None:
        """The app's pid inside the container (its own PID namespace), from `heygem-launch status`."""
        programs = self.status().get("programs") or [{}]
        return programs[0].get("pid") if programs[0].get("state") == "RUNNING" else None

    def environ(self, pid: int) -> dict[str, str]:
        raw = self.exec("cat", f"/proc/{pid}/environ").stdout
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)

    def wait_healthy(self, timeout: float = 90) -> None:
        def healthy() -> bool:
            if not self.running():
                raise AssertionError(f"container exited {self.inspect('{{.State.ExitCode}}')}: {self.logs()[-3000:]}")
            return self.health() == 0

        wait_for(healthy, timeout, "the container to be healthy", interval=0.5)

    def host_pids(self) -> list[int]:
        """Every process of the container, as host pids (its PID namespace, found from PID 1's)."""
        pid1 = int(self.inspect("{{.State.Pid}}"))
        namespace = os.readlink(f"/proc/{pid1}/ns/pid")
        found = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and os.readlink(f"/proc/{name}/ns/pid") == namespace:
                    found.append(int(name))
            except OSError:
                continue
        return found

    def env_file(self, text: str) -> None:
        """Edit the mounted heygem.env as an editor does: a new file renamed over the old one."""
        new = self.config / ".heygem.env.new"
        new.write_text(text)
        new.rename(self.config / "heygem.env")


@pytest.fixture
def start(image: str, tmp_path: Path) -> Iterator[Callable[..., Container]]:
    """`podman run -d` of the image with `env` set, config/ mounted at /config; removed after the test."""
    names: list[str] = []

    def run(env: dict[str, str], env_file: str = "", *, args: tuple[str, ...] = ()) -> Container:
        name = f"heygem-test-{uuid.uuid4().hex[:10]}"
        config = tmp_path / f"config-{name}"
        config.mkdir()
        (config / "heygem.env").write_text(env_file)
        settings = [f"--env={key}={value}" for key, value in env.items()]
        names.append(name)
        podman(
            "run",
            "--detach",
            f"--name={name}",
            f"--volume={config}:/config:ro",
            "--env=HEYGEM_ENV_FILE=/config/heygem.env",
            *settings,
            *args,
            image,
            timeout=120,
        )
        return Container(name, config)

    yield run
    for name in names:
        podman("rm", "--force", "--time=0", name, timeout=120, check=False)


def assert_all_gone(pids: list[int]) -> None:
    left = [pid for pid in pids if not gone(pid)]
    for pid in left:  # leave nothing behind for the next test, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left after the container stopped: {left}"
