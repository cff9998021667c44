"""docker/README.md covers the commands and failure modes a user meets, and
docker/kuberay/raycluster.yaml is a token-authenticated RayCluster with GPU workers."""

from __future__ import annotations

import pytest

from tests.docker.files import (
    KUBERAY,
    README,
    _yaml,
)

# ================================================================== README and KubeRay


@pytest.mark.parametrize(
    "snippet",
    [
        "docker build -f docker/Dockerfile",
        "cp docker/.env.example docker/.env",
        "--scale ray-worker=",
        "compose.gpu.yaml",
        "--address ray://127.0.0.1:10001",
        "--address auto",
        "ray job submit",
        "http://127.0.0.1:8265",
        "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "down -v",
        "InvalidAuthToken",
        "RAY_AUTH_MODE=token",
        "port is already allocated",
    ],
)
def test_readme_covers(snippet):
    assert snippet in README.read_text()


def test_kuberay_raycluster():
    doc = _yaml(KUBERAY)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]
    ]
    def gpus(container):
        return (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")

    gpu_groups = [name for name, pod in pods if any(gpus(c) for c in pod["containers"])]
    assert gpu_groups and "head" not in gpu_groups
    images = set()
    for name, pod in pods:
        for container in pod["containers"]:
            images.add(container["image"])
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"].get("value") == "token", name
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"].get("valueFrom", {}), name
    assert len(images) == 1, "head and workers must run the same image"
