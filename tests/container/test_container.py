"""The image, run for real with podman: docker/Dockerfile's launcher layer over a stand-in HeyGem image (Debian,
a conda-like env with onnxruntime-gpu 1.16, the HeyGem-like app as app.py). No GPU here, so the CUDA path is a
real refusal; the running-service cases require CPUExecutionProvider, as the README allows."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.container import images
from tests.container.conftest import Container, assert_all_gone
from tests.container.images import HERE, REPO, podman, podman_env
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.container

CPU = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider"}
# What onnxruntime-gpu 1.16 needs (FIELD.md section 3) and the stand-in image lacks, as a HeyGem image run
# without the CUDA libraries would.
CUDA11 = ("libcublasLt.so.11", "libcublas.so.11", "libcudnn.so.8", "libcurand.so.10", "libcufft.so.10")


def test_run_without_settings_refuses_naming_the_missing_libraries(image: str) -> None:
    result = podman("run", "--rm", image, timeout=120, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 69, out
    assert "REFUSED [cuda_libraries_missing]" in out
    assert all(library in out for library in CUDA11), out
    assert "Traceback" not in out
    # Arguments reach heygem-launch through tini and entrypoint.sh.
    checked = podman("run", "--rm", image, "--check-only", "--json", timeout=120, check=False)
    report = json.loads(checked.stdout)
    assert checked.returncode == 69 and report["cause"] == "cuda_libraries_missing"
    missing = {lib["name"] for lib in report["libraries"] if lib["path"] is None}
    assert set(CUDA11) <= missing


def test_healthcheck_follows_readiness_and_status_and_doctor_answer(start) -> None:  # type: ignore[no-untyped-def]
    # The app takes 6 s to listen: the healthcheck must say unhealthy until then, while podman still says starting.
    box: Container = start({**CPU, "TEST_APP_MODE": "slow-start", "TEST_APP_START_DELAY": "6"})
    assert box.health() == 1
    assert box.inspect("{{.State.Health.Status}}") == "starting"
    box.wait_healthy()
    assert box.inspect("{{.State.Health.Status}}") == "healthy"

    status = box.launch("status", "--json")
    assert status.returncode == 0, status.stderr
    program = json.loads(status.stdout)["programs"][0]
    assert program["state"] == "RUNNING" and program["pid"]

    doctor = box.launch("doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    found = json.loads(doctor.stdout)
    assert found["service"]["running"] and found["app"]["pid"] == program["pid"]
    # The app runs in its conda env as conda would activate it: conda-meta/state's vars, activate.d sourced.
    env = box.environ(program["pid"])
    assert env["CONDA_PREFIX"] == "/opt/conda/envs/human"
    assert env["TEST_CONDA_VAR"] == "from-conda-meta" and env["TEST_ACTIVATE_D"] == "sourced"
    assert "" not in env["LD_LIBRARY_PATH"].split(":")
    assert env["PYTHONUNBUFFERED"] == "1"  # from heygem-launch itself: neither image sets it here


def test_app_killed_inside_is_respawned_and_the_container_stays_up(start) -> None:  # type: ignore[no-untyped-def]
    box: Container = start(CPU)
    box.wait_healthy()
    pid = box.app_pid()
    assert pid
    assert box.exec("sh", "-c", f"kill -9 {pid}").returncode == 0  # the shell's kill: minbase has no procps
    new = wait_for(lambda: (p := box.app_pid()) and p != pid and p, 60, "a new app pid", interval=0.5)
    assert new != pid
    box.wait_healthy()
    assert box.running()
    assert box.status()["programs"][0]["restarts"] >= 1


def test_restart_applies_the_edited_env_file_and_refuses_a_bad_value(start) -> None:  # type: ignore[no-untyped-def]
    # Everything from the mounted file, as in the compose workflow: the image's environment sets no setting.
    box: Container = start({}, "HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nAPP_GREETING=one\n")
    box.wait_healthy()
    first = box.app_pid()
    assert first and box.environ(first)["APP_GREETING"] == "one"

    box.env_file("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nAPP_GREETING=two\n")
    restarted = box.launch("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    second = wait_for(lambda: (p := box.app_pid()) and p != first and p, 60, "the restarted app", interval=0.5)
    assert box.environ(second)["APP_GREETING"] == "two"
    box.wait_healthy()

    box.env_file("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nHEYGEM_STOP_GRACE=soon\nAPP_GREETING=three\n")
    refused = box.launch("restart")
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert "HEYGEM_STOP_GRACE" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    # The old app is untouched: same pid, same environment, still healthy.
    assert box.app_pid() == second and box.environ(second)["APP_GREETING"] == "two"
    assert box.health() == 0


def test_podman_stop_exits_0_within_the_grace_and_leaves_nothing(start) -> None:  # type: ignore[no-untyped-def]
    # An app (and workers) that ignore SIGTERM: only the launcher's SIGKILL at HEYGEM_STOP_GRACE ends them.
    grace = 3
    box: Container = start({**CPU, "TEST_APP_MODE": "ignore-sigterm", "HEYGEM_STOP_GRACE": str(grace)})
    box.wait_healthy()
    pids = box.host_pids()
    assert len(pids) >= 5  # tini, heygem-launch, supervisord, the wrapper's app and its two workers
    began = time.monotonic()
    podman("stop", "--time=20", box.name, timeout=60)
    took = time.monotonic() - began
    assert box.inspect("{{.State.ExitCode}}") == "0", box.logs()[-3000:]
    assert took < grace + 2, f"podman stop took {took:.1f} s"
    assert_all_gone(pids)


def test_crash_looping_app_ends_the_container_with_70(start) -> None:  # type: ignore[no-untyped-def]
    box: Container = start({**CPU, "TEST_APP_MODE": "crash-loop", "HEYGEM_START_SECONDS": "1"})
    code = podman("wait", box.name, timeout=120).stdout.strip()
    assert code == "70", box.logs()[-3000:]
    assert "Traceback" not in box.logs()


def test_compose_file_runs_the_same_healthy_service(image: str, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "heygem.env").write_text("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\n")
    project = f"heygem-test-{uuid.uuid4().hex[:10]}"
    compose = [sys.executable, "-m", "podman_compose", "--project-name", project]
    compose += ["--file", str(REPO / "docker" / "compose.yml"), "--file", str(HERE / "compose.override.yml")]
    env = {**podman_env(), "HEYGEM_IMAGE": image, "HEYGEM_PORT": str(free_port()), "HEYGEM_CONFIG_DIR": str(config)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*compose, *args], env=env, capture_output=True, text=True, timeout=180, check=False)

    try:
        up = run("up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        names = podman("ps", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
        (name,) = names.stdout.split()
        box = Container(name, config)
        box.wait_healthy()
        assert box.inspect("{{.HostConfig.ShmSize}}") == str(8 * 1024**3)
        assert box.launch("status").returncode == 0
        down = run("down")
        assert down.returncode == 0, down.stdout + down.stderr
        left = podman("ps", "--all", "--filter", f"label=io.podman.compose.project={project}", "--quiet")
        assert not left.stdout.strip()
    finally:
        run("down", "--volumes")


def test_image_runs_this_checkouts_launcher(image: str) -> None:
    """The build cache must never keep an old launcher: every module in the image is the checkout's."""
    script = (
        "import hashlib, pathlib, launcher; root = pathlib.Path(launcher.__file__).parent; "
        "[print(p.relative_to(root), hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(root.rglob('*.py'))]"
    )
    result = podman("run", "--rm", "--entrypoint", "/opt/heygem-launch/bin/python", image, "-c", script)
    inside = dict(line.split() for line in result.stdout.splitlines())
    root = REPO / "launcher"
    here = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.py"))}
    assert inside == here


def test_heygem_stage_links_every_model_download_sh_writes_into_the_volume(image: str, tmp_path: Path) -> None:
    """The heygem stage's model/temp step, run in Debian on files in the Hack's format (its download.sh is
    `wget URL -O relative/path` lines; its config.ini has `temp_dir = ./`): the stage cannot be built here."""
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    (step,) = [line[4:] for line in text.splitlines() if line.startswith("RUN ") and "download.sh" in line]
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "xseg").mkdir()
    (app / "xseg" / "dfl_xseg_api.so").write_text("code beside a model")
    url = "https://github.com/Holasyb918/HeyGem-Linux-Python-Hack/releases/download/ckpts_and_onnx"
    (app / "download.sh").write_text(
        f"set -e\nmkdir -p xseg\nwget {url}/xseg_211104_4790000.onnx -O xseg/xseg_211104_4790000.onnx\n"
        f"mkdir -p wenet/examples/aishell/aidata/exp/conformer\n"
        f"wget {url}/wenetmodel.pt -O wenet/examples/aishell/aidata/exp/conformer/wenetmodel.pt\n"
    )
    (app / "config" / "config.ini").write_text("[temp]\ntemp_dir = ./\nclean_switch = 1\n")
    debian = images.debian_image()
    podman("run", "--rm", f"--volume={app}:/app", "--workdir=/app", debian, "bash", "-o", "pipefail", "-c", step)
    assert os.readlink(app / "xseg" / "xseg_211104_4790000.onnx") == "/models/xseg/xseg_211104_4790000.onnx"
    conformer = app / "wenet/examples/aishell/aidata/exp/conformer/wenetmodel.pt"
    assert os.readlink(conformer) == "/models/wenet/examples/aishell/aidata/exp/conformer/wenetmodel.pt"
    assert (app / "xseg" / "dfl_xseg_api.so").read_text() == "code beside a model"
    assert "temp_dir = ./temp\n" in (app / "config" / "config.ini").read_text()
    assert (app / "result").is_dir() and (app / "temp").is_dir()
