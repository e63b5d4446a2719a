"""Issue 19: the pod's termination message under `podman kube play` (podman 4.3, no GPU, no kubelet) holds the
one-line cause of the exit, for 69 (the manifest's CUDA requirement refused: no GPU here), 70 (an app that keeps
crashing) and 71 (a GPU fault while the app runs). The manifest is deploy/kubernetes/ as test_kube.py renders it.

What podman does and what stands in for the kubelet: podman creates no `/dev/termination-log` and shows no
termination message (`podman inspect` has none; seen here), so the test mounts a host file there, as the kubelet
does (`terminationMessagePath`), and reads it after the exit, as the kubelet does to fill
`lastState.terminated.message`. `restartPolicy: Never`, as a Job would have it: under the Deployment's `Always`
podman would start the container again and again.

Exit 71 runs on the STAND-IN NVIDIA DRIVER (tests/standin_driver.py), because no CPU machine has a GPU that faults:
its libnvidia-ml.so.1, built on the host with its `cc` (host and image are both Debian bookworm; the library needs
GLIBC_2.34 at most, bookworm has 2.36), is mounted into the pod by a hostPath volume at the same absolute path as on
the host, because its settings name its events file by that path, and put on the container's LD_LIBRARY_PATH
(NVIDIA's container toolkit would mount the real one into the image's library folder instead). The launcher's
nvidia-ml-py loads it, the GPU watch waits in its nvmlEventSetWait_v2 for GPU 0, and the test raises the fault from
the host by appending to the events file in the mounted folder (the stand-in's inotify watch sees the host's write
through the bind mount). The folder lies below /tmp and belongs to root inside the container, which the launcher's
library-path check accepts (no other user could plant a library there). The app stays on CPUExecutionProvider:
the image has no CUDA libraries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import standin_driver, stubelf
from tests.container.images import podman
from tests.container.test_kube import PROVIDER_LINE, render
from tests.harness import free_port, wait_for
from tests.standin_driver import StandInDriver

pytestmark = pytest.mark.container


def play_until_exit(
    image: str,
    tmp_path: Path,
    env_lines: tuple[str, ...],
    *,
    cuda: bool,
    driver: Path | None = None,
    while_running: Callable[[str], None] | None = None,
) -> tuple[int, str, str]:
    """The Deployment played with `env_lines` added to its ConfigMap's heygem.env (and its CUDA requirement
    kept when `cuda`, the stand-in driver in `driver` mounted) until its container exits: the exit code, the
    termination message, the container's log. `while_running` gets the container's name once the pod plays."""
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
    (container,) = pod_spec["containers"]
    mount(pod_spec, container, f"termination-{suffix}", message, "/dev/termination-log", "File")
    if driver is not None:
        mount(pod_spec, container, f"driver-{suffix}", driver, str(driver), "Directory", read_only=True)
        container["env"].append({"name": "LD_LIBRARY_PATH", "value": str(driver)})
    path = tmp_path / f"heygem-kube-{suffix}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    pod = f"{deployment['metadata']['name']}-pod-0"
    name = f"{pod}-{original['name']}"
    try:
        played = podman("kube", "play", str(path), timeout=180, check=False)
        assert played.returncode == 0, played.stdout + played.stderr
        if while_running is not None:
            while_running(name)
        wait_for(lambda: exited(name), 150, "the container to exit", interval=0.5)
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
        return code, message.read_text(), logs_of(name)
    finally:
        podman("kube", "down", str(path), timeout=120, check=False)
        podman("pod", "rm", "--force", pod, timeout=120, check=False)
        podman("volume", "rm", "--force", config_map["metadata"]["name"], timeout=60, check=False)


def mount(
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    name: str,
    host: Path,
    at: str,
    kind: str,
    *,
    read_only: bool = False,
) -> None:
    """A hostPath volume: the host's `host` (a `kind`: File, Directory) seen in the container at `at`."""
    pod_spec["volumes"].append({"name": name, "hostPath": {"path": str(host), "type": kind}})
    container["volumeMounts"].append({"name": name, "mountPath": at, "readOnly": read_only})


def exited(name: str) -> bool:
    return podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip() == "exited"


def logs_of(name: str) -> str:
    logs = podman("logs", name, check=False)
    return logs.stdout + logs.stderr


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


def app_starts(logs: str) -> int:
    return sum(1 for line in logs.splitlines() if "app started: pid" in line)


@pytest.mark.skipif(stubelf.cc() is None, reason="no C compiler to build the stand-in driver")
@pytest.mark.parametrize(
    ("fault", "said", "action"),
    [
        ("xid 79", "XID 79 (GPU has fallen off the bus)", "reboot the node"),
        ("nvml 999", "NVML Unknown Error", "recreate the container"),
    ],
)
def test_a_gpu_fault_ends_the_pod_with_71_and_says_why_in_its_termination_message(
    image: str, tmp_path: Path, fault: str, said: str, action: str
) -> None:
    # Copies, not links into the host's build cache, which the container does not see; NVML only, as the watch
    # needs nothing else (the image has no CUDA libraries for a libcuda to serve).
    driver = standin_driver.install(tmp_path / "driver", StandInDriver(), cuda=False, copies=True)
    kind, number = fault.split()

    def fault_once_the_app_runs(name: str) -> None:
        def app_runs() -> bool:
            if exited(name):
                raise AssertionError(f"the container exited before the fault: {logs_of(name)[-3000:]}")
            return app_starts(logs_of(name)) > 0

        wait_for(app_runs, 120, "the app to start", interval=0.5)
        assert "GPU watch off" not in logs_of(name)  # the launcher's NVML is the stand-in's, and it watches GPU 0
        if kind == "xid":
            standin_driver.raise_xid(driver, 0, int(number))
        else:
            standin_driver.raise_nvml_error(driver, int(number), gpu=0)

    code, message, logs = play_until_exit(
        image, tmp_path, (), cuda=False, driver=driver, while_running=fault_once_the_app_runs
    )
    assert code == 71, logs[-3000:]
    line = assert_one_cause_line(message, logs)
    assert line.startswith("GPU fault on GPU 0 (GPU-00000000-0000-0000-0000-000000000000): "), line
    assert said in line and f"NVIDIA's action: {action}" in line, line
    assert app_starts(logs) == 1, logs[-3000:]  # stopped, never restarted onto the broken GPU
    print(f"71 ({fault}): {line}")
