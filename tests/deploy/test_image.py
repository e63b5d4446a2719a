"""What can be checked of the image without a container engine: the entrypoint for real under tini, and the
Dockerfile's and compose file's promises, read as data (the HeyGem stage cannot be built here: it needs GitHub,
conda-forge and PyTorch's index). tests/container builds and runs the launcher layer for real."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

from tests.conftest import LAUNCH, clean_environ

REPO = Path(__file__).resolve().parents[2]


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


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name ("" for the ARGs before the first FROM)."""
    found: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = rest.split(" AS ")[-1].strip()
            found[current] = []
        found[current].append((keyword, rest))
    return found


def text(found: list[tuple[str, str]], keyword: str) -> str:
    return " ".join(rest for kw, rest in found if kw == keyword)


def test_dockerfile_builds_heygem_as_its_readme_says_works() -> None:
    heygem = stages()["heygem"]
    assert heygem[0] == ("FROM", "docker.io/nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04 AS heygem")
    runs, args = text(heygem, "RUN"), text(heygem, "ARG")
    # conda-forge's Miniforge: a non-interactive `conda create` needs no ToS acceptance.
    assert "miniforge" in args.lower() and "anaconda.com" not in args + runs
    assert "conda create -y -n human python=3.8" in runs
    # requirements_0.txt (ORT 1.16, gradio, Flask), torch from PyTorch's cu113 index.
    assert "-r requirements_0.txt" in runs and "--extra-index-url" in runs and "whl/cu113" in args
    env = text(heygem, "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:512" in env
    volumes = text(heygem, "VOLUME")
    assert all(
        v in volumes for v in ('"/models"', "/HeyGem-Linux-Python-Hack/result", "/HeyGem-Linux-Python-Hack/temp")
    )
    assert "bash download.sh" not in runs and "sh download.sh" not in runs  # models are not baked in


def test_dockerfile_puts_the_launcher_over_any_base_image() -> None:
    found = stages()
    assert ("ARG", "BASE_IMAGE=heygem") in found[""]
    launcher = found["launcher"]
    assert launcher[0] == ("FROM", "${BASE_IMAGE} AS launcher") and list(found)[-1] == "launcher"
    entry = text(launcher, "ENTRYPOINT")
    assert entry.startswith('["/usr/bin/tini", "-g", "--", "/entrypoint.sh"')
    assert ("STOPSIGNAL", "SIGTERM") in launcher
    assert '"heygem-launch", "probe", "ready"' in text(launcher, "HEALTHCHECK")
    assert "HEYGEM_CONDA_ENV=human" in text(launcher, "ARG") and "HEYGEM_CONDA_ENV=${HEYGEM_CONDA_ENV}" in text(
        launcher, "ENV"
    )
    # Its own venv, from the wheelhouse only, never the [gpu] extra (it would upgrade the app's ORT).
    runs = text(launcher, "RUN")
    assert "/opt/heygem-launch/bin/pip install" in runs and "--no-index" in runs and "[gpu]" not in runs


def test_build_image_needs_a_base_and_a_tag() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh"), "only-one"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 64 and "usage: scripts/build-image.sh BASE_IMAGE TAG" in result.stderr


def test_compose_reserves_a_gpu_and_gives_the_stop_room() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    service = compose["services"]["heygem"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "${HEYGEM_PORT:-7860}:7860" in service["ports"]
    assert service["shm_size"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > 8  # more than HEYGEM_STOP_GRACE's default
    assert service["environment"]["HEYGEM_ENV_FILE"].startswith("/config/")
    assert "${HEYGEM_CONFIG_DIR:-../config}:/config:ro" in service["volumes"]


def test_entrypoint_is_posix_sh_and_execs() -> None:
    text = (REPO / "entrypoint.sh").read_text()
    assert text.startswith("#!/bin/sh")
    commands = [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert ["exec", "heygem-launch", "$@"] in commands


def test_healthcheck_and_status_answer_while_the_env_file_holds_an_unapplied_bad_value(tmp_path: Path) -> None:
    """An edit to the mounted heygem.env is applied only by `restart`, which refuses a bad value (78). Until then
    the image's HEALTHCHECK (`probe ready`) and `status` must still answer about the running service, or a typo
    would turn a healthy container unhealthy. (tests/container shows it in a real container.)"""
    env_file = tmp_path / "heygem.env"
    env_file.write_text("HEYGEM_STOP_GRACE=soon\n")
    env = {
        **clean_environ(),
        "HEYGEM_ENV_FILE": str(env_file),
        "HEYGEM_RUN_DIR": str(tmp_path / "run"),
        "HEYGEM_APP_DIR": str(tmp_path),
    }

    def launch_with(extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*LAUNCH, *args], env={**env, **extra}, capture_output=True, text=True, check=False)

    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        return launch_with({}, *args)

    probe, status, restart = launch("probe", "ready"), launch("status"), launch("restart")
    # Nothing runs in this run dir: the probe fails (1) and status says so (69), each warning about the file.
    assert probe.returncode == 1 and status.returncode == 69, probe.stderr + status.stderr
    assert all("HEYGEM_STOP_GRACE='soon'" in r.stderr and "Traceback" not in r.stderr for r in (probe, status))
    assert restart.returncode == 78 and "HEYGEM_STOP_GRACE" in restart.stderr
    warning = "a restart would refuse it (this command answers from the service's run dir, not from these settings)"
    assert "HEYGEM_STOP_GRACE='soon' (from .env): " in status.stderr and warning in status.stderr
    # The same value from this shell's environment is named as the environment's, never as the file's.
    env_file.write_text("")
    status = launch_with({"HEYGEM_STOP_GRACE": "soon"}, "status")
    assert "HEYGEM_STOP_GRACE='soon' (from environment): " in status.stderr and warning in status.stderr
    assert ".env" not in status.stderr, status.stderr


def fully_qualified(image: str) -> bool:
    """A name podman resolves without `unqualified-search-registries` (Debian's registries.conf defines none):
    its first component is a registry host (a dot or a port in it, or `localhost`)."""
    first = image.split("/", 1)[0]
    return "/" in image and ("." in first or ":" in first or first == "localhost")


def image_references() -> list[tuple[str, str]]:
    """Every image a Dockerfile's FROM, an ARG's default used by a FROM, or a compose `image:` names."""
    found = []
    for path in [*REPO.glob("docker/*file*"), *REPO.glob("**/Containerfile*")]:
        if ".venv" in path.parts:
            continue
        lines = path.read_text().splitlines()
        stages = {line.split()[-1] for line in lines if line.startswith("FROM ") and " AS " in line}
        defaults = dict(line[4:].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line)
        for line in lines:
            if line.startswith("FROM "):
                image = line.split()[1]
                image = defaults.get(image.strip("${}"), image) if image.startswith("$") else image
                if image not in stages:
                    found.append((path.name, image))
    for path in REPO.glob("docker/*.y*ml"):  # (tests/container/compose.override.yml names no image)
        for service in (yaml.safe_load(path.read_text()).get("services") or {}).values():
            if "image" in service:
                image = service["image"]
                found.append((path.name, image.split(":-", 1)[1].rstrip("}") if image.startswith("${") else image))
    return found


def test_every_image_is_named_in_full() -> None:
    """A short name (`nvidia/cuda:…`) fails under podman on a stock Debian: 'did not resolve to an alias and no
    unqualified-search registries are defined'."""
    found = image_references()
    assert ("Dockerfile", "docker.io/nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04") in found
    assert ("compose.yml", "localhost/heygem-launch:latest") in found
    short = [(where, image) for where, image in found if not fully_qualified(image)]
    assert not short, short


def test_restart_policies_do_not_loop_on_a_permanent_refusal() -> None:
    """69 (no usable GPU or CUDA library) and 78 (a bad setting) do not go away by themselves: `always` and
    `unless-stopped` would run the preflight again and again. Docker cannot exclude exit codes: a bounded
    `on-failure`. compose.yml had `unless-stopped`."""
    for name in ("compose.yml", "compose.gen-video.yml"):
        for service in yaml.safe_load((REPO / "docker" / name).read_text())["services"].values():
            policy = service["restart"]
            assert policy.startswith("on-failure:") and 0 < int(policy.split(":")[1]) <= 5, (name, policy)


def test_gen_video_compose_mirrors_the_official_service_with_the_launcher_in_front() -> None:
    """duixcom/Duix-Avatar's `duix-avatar-gen-video` (FIELD-heygem-ai.md section 3): the GPU reserved, shm 8g,
    the allocator setting, /code/data, 8383; plus the probes as healthcheck and the service's command as the
    launcher's app command."""
    service = yaml.safe_load((REPO / "docker" / "compose.gen-video.yml").read_text())["services"][
        "duix-avatar-gen-video"
    ]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in devices[0]["capabilities"]
    assert service["shm_size"] == "8gb" and "${HEYGEM_PORT:-8383}:8383" in service["ports"]
    assert any(volume.endswith(":/code/data") for volume in service["volumes"])
    env = service["environment"]
    assert env["HEYGEM_APP_COMMAND"] == "python app_local.py" and env["HEYGEM_APP_PORT"] == "8383"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    assert service["healthcheck"]["test"] == ["CMD", "heygem-launch", "probe", "ready"]
    assert int(service["stop_grace_period"].rstrip("s")) > 8
    assert service["image"].startswith("${HEYGEM_IMAGE:-localhost/")
