"""Pod specs for the node tests: the project's image under the restricted Pod Security Standard."""

from __future__ import annotations

from typing import Any

RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def container(name: str, image: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **fields,
    }


def pod_spec(*containers: dict[str, Any], restart: str = "Always") -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "restartPolicy": restart,
        "securityContext": RESTRICTED_POD,
        "containers": list(containers),
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
    }


def demo_deployment(image: str) -> dict[str, Any]:
    """``aggregator demo`` (no servers) listening on 8000: a web server to reach."""
    web = container(
        "web",
        image,
        args=["demo", "--host", "0.0.0.0", "--port", "8000", "--pods", "2"],
        ports=[{"name": "http", "containerPort": 8000}],
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(web)},
        },
    }


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]},
    }


def script_pod(name: str, image: str, script: str) -> dict[str, Any]:
    """A pod that runs one Python script once with the image's interpreter."""
    runner = container(name, image, command=["python", "-c", script])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": pod_spec(runner, restart="Never"),
    }
