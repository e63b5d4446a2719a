"""deploy/kubernetes/ run for real with `podman kube play` on the test image (podman 4.3, no GPU, no kubelet).

The pod is rendered from the real manifest files with PyYAML, changing only what must change here: the image is
the test image; the PVCs become emptyDirs (no storage class here); no `nvidia.com/gpu` limit and
`HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider` in the ConfigMap's heygem.env (no GPU on CI: the CUDA path is a
refusal, tested in test_container.py), plus the stand-in app's slow start; and, because podman turns every
pod-local name into a global one (the pod, each volume, the ConfigMap's volume) and publishes containerPort on
the host, a unique Deployment/ConfigMap name, unique volume names and a free hostPort, so that a parallel run
never shares a pod, a volume or port 7860 with this one. The Service is played too; podman 4.3 ignores it.

What podman 4.3 does with the manifest (seen here):
- Probes: only `livenessProbe` becomes something, the container's healthcheck (`CMD-SHELL <command> || exit 1`,
  interval, timeout and retries from the probe, action `restart`; asserted). `startupProbe` and
  `readinessProbe` are dropped: the pod's state never depends on them. Without systemd (here and in CI) podman
  cannot schedule the healthcheck's timer either, so nothing runs it until `podman healthcheck run`. So the test
  does the kubelet's part: it runs the manifest's startup and readiness commands with `podman exec`, as the
  kubelet's exec probes would, and the liveness one with `podman healthcheck run`, and asserts their exit codes.
- The ConfigMap becomes a podman volume holding its data, bind-mounted at /config: its host side is the folder
  the container reads, so the test edits heygem.env there (no hostPath stand-in needed), as the kubelet would.
- emptyDir, `medium: Memory` included, becomes a disk-backed volume: /dev/shm is not a tmpfs under podman 4.3.
- terminationGracePeriodSeconds is ignored (podman's default stop timeout, 10 s), and `podman kube down` SIGKILLs
  the containers at once; so the test stops the pod with `podman pod stop` first (see the end of the test).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from tests.container.conftest import Container, assert_all_gone
from tests.container.images import REPO, podman
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.container

DEPLOY = REPO / "deploy" / "kubernetes"
PROVIDER_LINE = "HEYGEM_REQUIRE_PROVIDER=CUDAExecutionProvider"
# The stand-in app listens only 8 s after its start, so the readiness probe is seen failing before it passes.
SLOW_START = ("TEST_APP_MODE=slow-start", "TEST_APP_START_DELAY=8")


def load(name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return dict(doc)


def render(image: str, suffix: str, host_port: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ConfigMap, Deployment and Service of deploy/kubernetes/ as this test plays them (module docstring),
    and the Deployment's container as the files define it."""
    config_map, deployment, service = load("configmap.yaml"), load("deployment.yaml"), load("service.yaml")
    original = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"][0])
    env_file = config_map["data"]["heygem.env"]
    assert env_file.splitlines().count(PROVIDER_LINE) == 1, "the ConfigMap no longer requires CUDA as this expects"
    env_file = env_file.replace(PROVIDER_LINE, "HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider")
    config_map["data"]["heygem.env"] = env_file + "".join(f"{line}\n" for line in SLOW_START)

    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    del container["resources"]["limits"]["nvidia.com/gpu"]
    (port,) = container["ports"]
    port["hostPort"] = host_port  # podman publishes containerPort on the host (7860) when no hostPort is given
    names = {volume["name"]: f"{volume['name']}-{suffix}" for volume in pod["volumes"]}
    for volume in pod["volumes"]:
        volume["name"] = names[volume["name"]]
        if "persistentVolumeClaim" in volume:
            del volume["persistentVolumeClaim"]
            volume["emptyDir"] = {}
        if "configMap" in volume:
            volume["configMap"]["name"] = f"{volume['configMap']['name']}-{suffix}"
    for mount in container["volumeMounts"]:
        mount["name"] = names[mount["name"]]
    config_map["metadata"]["name"] += f"-{suffix}"
    deployment["metadata"]["name"] += f"-{suffix}"
    return [config_map, deployment, service], original


def _config_dir(container: dict[str, Any]) -> str:
    """Where the Deployment mounts the ConfigMap's folder: HEYGEM_ENV_FILE's folder."""
    env = {e["name"]: e["value"] for e in container["env"]}
    return str(Path(env["HEYGEM_ENV_FILE"]).parent)


@pytest.fixture
def kube_file(image: str, tmp_path: Path) -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    """The rendered YAML, the pod's name, its container's name and the manifest's container; the pod and the ConfigMap's
    volume (which `podman kube down` 4.3 leaves behind) are removed after the test whatever happened."""
    suffix = uuid.uuid4().hex[:10]
    docs, original = render(image, suffix, free_port())
    path = tmp_path / "heygem-kube.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    deployment = docs[1]["metadata"]["name"]
    # podman 4.3 names a Deployment's pod `<name>-pod-0` and its containers `<pod>-<container>`.
    pod = f"{deployment}-pod-0"
    yield path, pod, f"{pod}-{original['name']}", original
    podman("kube", "down", str(path), timeout=120, check=False)
    podman("pod", "rm", "--force", pod, timeout=120, check=False)
    podman("volume", "rm", "--force", docs[0]["metadata"]["name"], timeout=60, check=False)


def test_kube_play_probes_pass_a_configmap_edit_restarts_and_the_pod_stops_cleanly(
    kube_file: tuple[Path, str, str, dict[str, Any]],
) -> None:
    path, pod, name, manifest = kube_file
    began = time.monotonic()
    played = podman("kube", "play", str(path), timeout=180, check=False)
    assert played.returncode == 0, played.stdout + played.stderr

    # The Deployment's mount and HEYGEM_ENV_FILE: the ConfigMap's volume, seen where the container reads it.
    mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", name).stdout)
    (volume,) = [m for m in mounts if m["Destination"] == _config_dir(manifest)]
    assert volume["Type"] == "volume" and volume["RW"] is False
    # podman fills a volume of its own with the ConfigMap's data and bind-mounts that folder: its host side is
    # the folder the container reads, so an edit there reaches the container (there is no kubelet to do it).
    config = Path(volume["Source"])
    box = Container(name, config)
    (config_map, *_) = yaml.safe_load_all(path.read_text())
    assert (config / "heygem.env").read_text() == config_map["data"]["heygem.env"]

    # The liveness probe is podman's healthcheck, replacing the image's own HEALTHCHECK (`probe ready`).
    live = manifest["livenessProbe"]
    healthcheck = box.inspect("{{json .Config.Healthcheck}}")
    assert yaml.safe_load(healthcheck) == {
        "Test": ["CMD-SHELL", *live["exec"]["command"], "||", "exit", "1"],
        "Interval": live["periodSeconds"] * 10**9,
        "Timeout": live["timeoutSeconds"] * 10**9,
        "Retries": live["failureThreshold"],
    }
    assert box.inspect("{{.Config.HealthcheckOnFailureAction}}") == "restart"

    # The kubelet's part, with the manifest's own commands run in the container: the startup probe until it
    # passes (it fails while the preflight runs), then the readiness probe, which fails until the app listens
    # (8 s after its start, after HEYGEM_START_SECONDS' 5 s that the startup probe waits for) and then passes.
    startup, ready = manifest["startupProbe"]["exec"]["command"], manifest["readinessProbe"]["exec"]["command"]
    codes: dict[str, list[int]] = {"startup": [], "ready": []}

    def passes(kind: str, command: list[str]) -> bool:
        if not box.running():
            raise AssertionError(f"the container exited: {box.logs()[-3000:]}")
        codes[kind].append(box.exec(*command, timeout=30).returncode)
        return codes[kind][-1] == 0

    wait_for(lambda: passes("startup", startup), 90, "the startup probe to pass", interval=0.5)
    wait_for(lambda: passes("ready", ready), 90, "the readiness probe to pass", interval=0.5)
    assert codes["startup"][0] == 1 and codes["ready"][0] == 1, codes
    ready_after = time.monotonic() - began
    checked = podman("healthcheck", "run", name, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert box.inspect("{{.State.Health.Status}}") == "healthy"
    assert "live: ok" in box.inspect("{{(index .State.Health.Log 0).Output}}")

    # An edit of the ConfigMap's file on the host side of its volume, then `heygem-launch restart`.
    first = box.app_pid()
    assert first and "APP_GREETING" not in box.environ(first)
    box.env_file((config / "heygem.env").read_text() + "APP_GREETING=edited-configmap\n")
    restarted = box.launch("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    second = wait_for(lambda: (p := box.app_pid()) and p != first and p, 60, "the restarted app", interval=0.5)
    assert box.environ(second)["APP_GREETING"] == "edited-configmap"
    wait_for(lambda: passes("ready", ready), 60, "readiness after the restart", interval=0.5)

    # Stopping: `podman pod stop` first, then `podman kube down`. podman 4.3's `kube down` alone SIGKILLs the
    # containers at once (exit 137, seen here; podman issues #19135, #21767, #22397, fixed by PR #22398 in 5.x),
    # and ignores terminationGracePeriodSeconds: the container keeps podman's default stop timeout, which must be
    # above HEYGEM_STOP_GRACE for `pod stop` to be the launcher's clean exit.
    grace = int(dotenv_values(config / "heygem.env")["HEYGEM_STOP_GRACE"] or 0)
    assert int(box.inspect("{{.Config.StopTimeout}}")) > grace
    pids = box.host_pids()
    assert len(pids) >= 5  # tini, heygem-launch, supervisord, the wrapper's app and its two workers
    stopping = time.monotonic()
    stopped = podman("pod", "stop", pod, timeout=120, check=False)
    took = time.monotonic() - stopping
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert box.inspect("{{.State.ExitCode}}") == "0", box.logs()[-3000:]
    assert took < grace + 2, f"podman pod stop took {took:.1f} s"
    assert_all_gone(pids)
    down = podman("kube", "down", str(path), timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert podman("pod", "exists", pod, check=False).returncode == 1
    assert podman("container", "exists", name, check=False).returncode == 1
    print(f"kube play -> ready {ready_after:.1f} s; pod stop {took:.1f} s")
