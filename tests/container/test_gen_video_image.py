"""README's recipe for HeyGem.ai / Duix.Avatar's gen-video image, built and run for real with podman over a stand-in
base of that image's layout (tests/container/Containerfile.genvideo-base: /code/app_local.py, /usr/local/python3,
config.ini on 8383, a CMD that does not start the service), and docker/compose.gen-video.yml brought up with
podman-compose: the service starts healthy through the probes, and only once its workers said they loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.container import images
from tests.container.conftest import Container, unusable_reason
from tests.container.images import HERE, REPO, podman, podman_env
from tests.harness import free_port

pytestmark = pytest.mark.container
COMPOSE = REPO / "docker" / "compose.gen-video.yml"


@pytest.fixture(scope="session")
def genvideo_image() -> str:
    reason = unusable_reason()
    if reason:
        pytest.skip(reason)
    return images.genvideo_launcher_image()


def compose_command(project: str) -> list[str]:
    command = [sys.executable, "-m", "podman_compose", "--project-name", project, "--file", str(COMPOSE)]
    return [*command, "--file", str(HERE / "compose.gen-video.override.yml")]


def test_podman_compose_accepts_the_gen_video_file(tmp_path: Path) -> None:
    env = {**podman_env(), "HEYGEM_CONFIG_DIR": str(tmp_path), "HEYGEM_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "podman_compose", "--file", str(COMPOSE), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "restart: on-failure:3" in run.stdout and "8383:8383" in run.stdout


def test_the_image_over_a_gen_video_base_starts_healthy_through_the_probes(genvideo_image: str, tmp_path: Path) -> None:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    (config / "heygem.env").write_text("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nTEST_APP_SPEED=5\n")
    project = f"heygem-genvideo-{uuid.uuid4().hex[:10]}"
    env = {
        **podman_env(),
        "HEYGEM_IMAGE": genvideo_image,
        "HEYGEM_PORT": str(free_port()),
        "HEYGEM_CONFIG_DIR": str(config),
        "HEYGEM_DATA_DIR": str(data),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose_command(project), *args], env=env, capture_output=True, text=True, timeout=180, check=False
        )

    try:
        up = run("up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        names = podman("ps", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
        (name,) = names.stdout.split()
        box = Container(name, config)
        box.wait_healthy(timeout=120)
        ready = box.launch("probe", "ready")
        assert "GET /easy/query?code=heygem-launch-probe" in ready.stdout, ready.stdout
        logs = box.logs()
        assert "system ->av_transfer load success" in logs and "TransDhServer服务启动" in logs
        status = json.loads(box.launch("status", "--json").stdout)
        assert status["programs"][0]["state"] == "RUNNING"
        # The service's own data folder is the volume (it creates data/result at start).
        assert (data / "result").is_dir()
        assert run("down").returncode == 0
    finally:
        run("down", "--volumes")
