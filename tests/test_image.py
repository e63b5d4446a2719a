"""What can be checked of the image without a Docker engine: the entrypoint for real under tini, and the
Dockerfile's and compose file's promises, read as data."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

from tests.conftest import LAUNCH

REPO = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
    """entrypoint.sh as the image runs it: under `tini -g`, with heygem-launch on PATH."""
    env = {**os.environ, "PATH": f"{Path(LAUNCH[0]).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["tini", "-g", "--", "sh", str(REPO / "entrypoint.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_entrypoint_execs_heygem_launch_with_its_arguments_under_tini() -> None:
    result = entrypoint("--version")
    assert result.returncode == 0, result.stderr
    assert "version" in result.stdout
    # Exit codes pass through tini unchanged: a usage error is 64.
    assert entrypoint("--bogus").returncode == 64


def test_dockerfile_runs_tini_as_pid_1_and_sets_the_defaults() -> None:
    found = instructions()
    entry = next(rest for kw, rest in found if kw == "ENTRYPOINT")
    assert entry.startswith('["/usr/bin/tini", "-g", "--", "/entrypoint.sh"')
    assert ("STOPSIGNAL", "SIGTERM") in found
    assert any(kw == "HEALTHCHECK" and "heygem-launch" in rest for kw, rest in found)
    env = " ".join(rest for kw, rest in found if kw == "ENV")
    assert "HEYGEM_CONDA_ENV=human" in env and "HEYGEM_APP_DIR=/app/HeyGem-Linux-Python-Hack" in env
    assert found[0][0] == "FROM" and "nvidia/cuda" in found[0][1] and "runtime" in found[0][1]
    # The launcher gets its own interpreter and never the [gpu] extra (it would upgrade the app's ORT).
    runs = " ".join(rest for kw, rest in found if kw == "RUN")
    assert "/opt/heygem-launch/bin/pip install" in runs and "[gpu]" not in runs


def test_compose_reserves_a_gpu_and_gives_the_stop_room() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    service = compose["services"]["heygem"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "7860:7860" in service["ports"]
    assert service["shm_size"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > 8  # more than HEYGEM_STOP_GRACE's default
    assert service["environment"]["HEYGEM_ENV_FILE"].startswith("/config/")
    assert any(volume.endswith(":/config:ro") for volume in service["volumes"])


def test_entrypoint_is_posix_sh_and_execs() -> None:
    text = (REPO / "entrypoint.sh").read_text()
    assert text.startswith("#!/bin/sh")
    commands = [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert ["exec", "heygem-launch", "$@"] in commands
