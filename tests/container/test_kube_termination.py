"""Issue 19: the pod's termination message under `podman kube play` (podman 4.3, no GPU, no kubelet) holds the
one-line cause of the exit, for 69 (the manifest's CUDA requirement refused: no GPU here) and 70 (an app that
keeps crashing). The manifest is deploy/kubernetes/ as test_kube.py renders it.

What podman does and what stands in for the kubelet: podman creates no `/dev/termination-log` and shows no
termination message (`podman inspect` has none; seen here), so the test mounts a host file there, as the
kubelet does (`terminationMessagePath`), and reads it after the exit, as the kubelet does to fill
`lastState.terminated.message`. `restartPolicy: Never`, as a Job would have it: under the Deployment's `Always`
podman would start the container again and again. Exit 71 (a GPU fault) needs a GPU, or the stand-in driver,
inside the container, which this image has neither of: it is shown outside a container
(tests/service/test_gpu_faults.py, tests/system/test_termination*.py).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.container.images import podman
from tests.container.test_kube import PROVIDER_LINE, render
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.container


def play_until_exit(image: str, tmp_path: Path, env_lines: tuple[str, ...], *, cuda: bool) -> tuple[int, str, str]:
    """The Deployment played with `env_lines` added to its ConfigMap's heygem.env (and its CUDA requirement
    kept when `cuda`) until its container exits: the exit code, the termination message, the container's log."""
    suffix = uuid.uuid4().hex[:10]
    docs, original = render(image, suffix, free_port())
    config_map, deployment = docs[0], docs[1]
    env_file = config_map["data"]["heygem.env"]
    if cuda:
        env_file = env_file.replace("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider", PROVIDER_LINE)
    config_map["data"]["heygem.env"] = env_file + "".join(f"{line}\n" for line in env_lines)
    message = tmp_path / f"termination-log-{suffix}"
    message.write_text("")
    message.chmod(0o666)  # written by whichever user the launcher runs as
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_spec["restartPolicy"] = "Never"
    pod_spec["volumes"].append({"name": f"termination-{suffix}", "hostPath": {"path": str(message), "type": "File"}})
    (container,) = pod_spec["containers"]
    container["volumeMounts"].append({"name": f"termination-{suffix}", "mountPath": "/dev/termination-log"})
    path = tmp_path / f"heygem-kube-{suffix}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    pod = f"{deployment['metadata']['name']}-pod-0"
    name = f"{pod}-{original['name']}"
    try:
        played = podman("kube", "play", str(path), timeout=180, check=False)
        assert played.returncode == 0, played.stdout + played.stderr

        def exited() -> bool:
            return podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip() == "exited"

        wait_for(exited, 150, "the container to exit", interval=0.5)
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
        logs = podman("logs", name, check=False)
        return code, message.read_text(), logs.stdout + logs.stderr
    finally:
        podman("kube", "down", str(path), timeout=120, check=False)
        podman("pod", "rm", "--force", pod, timeout=120, check=False)
        podman("volume", "rm", "--force", config_map["metadata"]["name"], timeout=60, check=False)


def assert_one_cause_line(message: str, logs: str) -> str:
    assert message.endswith("\n") and message.count("\n") == 1, repr(message)
    line = message.strip()
    assert line and line in logs, (line, logs[-3000:])  # the same line the log ends with, not another wording
    return line


def test_a_refused_preflight_ends_the_pod_with_69_and_says_why_in_its_termination_message(
    image: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    code, message, logs = play_until_exit(image, tmp_path, (), cuda=True)
    assert code == 69, logs[-3000:]
    line = assert_one_cause_line(message, logs)
    assert "REFUSED [cuda_libraries_missing]" in line and "libcuda.so.1" in line, line  # no GPU here
    print(f"69 after {time.monotonic() - began:.1f} s: {line[:200]}")


def test_a_crash_looping_app_ends_the_pod_with_70_and_says_why_in_its_termination_message(
    image: str, tmp_path: Path
) -> None:
    lines = ("TEST_APP_MODE=crash-loop", "HEYGEM_START_SECONDS=1")
    code, message, logs = play_until_exit(image, tmp_path, lines, cuda=False)
    assert code == 70, logs[-3000:]
    line = assert_one_cause_line(message, logs)
    assert "gave up after" in line and "cannot start: crash-loop mode" in line, line
