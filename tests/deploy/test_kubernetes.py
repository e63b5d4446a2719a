"""deploy/kubernetes/ against the Kubernetes API schemas, offline (kubernetes-validate, strict: an unknown
field fails), and against what the launcher needs: probes it answers, a grace above its own, the env file
mounted as a folder."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def kind(name: str) -> dict[str, Any]:
    return next(doc for doc in documents() if doc["kind"] == name)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_api(version: str) -> None:
    docs = documents()
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema error


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def test_probes_are_the_launchers_and_the_grace_is_above_its_stop_grace() -> None:
    pod = kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    probes = {k: container[k]["exec"]["command"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {
        "startupProbe": ["heygem-launch", "probe", "startup"],
        "readinessProbe": ["heygem-launch", "probe", "ready"],
        "livenessProbe": ["heygem-launch", "probe", "live"],
    }
    env_file = dotenv_values(stream=io.StringIO(kind("ConfigMap")["data"]["heygem.env"]))
    assert pod["terminationGracePeriodSeconds"] > int(env_file["HEYGEM_STOP_GRACE"] or 8) + 5
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_env_file_is_a_mounted_folder_so_an_edit_reaches_the_pod() -> None:
    pod = kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount, "a subPath mount never sees an edit of the ConfigMap"
    assert env["HEYGEM_ENV_FILE"] == f"{mount['mountPath']}/heygem.env"
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_the_validation_is_strict_enough_to_fail() -> None:
    service = kind("Service")
    service["spec"]["portz"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, VERSIONS[-1], strict=True)


def test_the_termination_message_is_the_launchers_cause_line() -> None:
    """heygem-launch writes the cause of a failed exit to /dev/termination-log (the default path); the log's tail
    stands in only when it wrote nothing (a kill, an OOM)."""
    container = kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container.get("terminationMessagePath", "/dev/termination-log") == "/dev/termination-log"
