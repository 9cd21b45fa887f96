"""Manifests the tests make: nodes as a kubelet registers them, workloads' pods with their
controller references, budgets. Plain dicts, as a client sends them."""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]


def node(name: str, *, ready: bool = True, ip: str = "10.0.0.1", kubelet: str = "v1.30.2", role: str = "") -> Manifest:
    labels = {"kubernetes.io/hostname": name}
    if role:
        labels[f"node-role.kubernetes.io/{role}"] = ""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "nodeInfo": {
                "machineID": f"machine-{name}",
                "systemUUID": f"uuid-{name}",
                "bootID": f"boot-{name}",
                "kernelVersion": "6.1.0-21-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.13",
                "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "kubelet is posting ready status" if ready else "container runtime network not ready",
                    "lastHeartbeatTime": "2024-06-01T10:00:00Z",
                    "lastTransitionTime": "2024-06-01T09:00:00Z",
                },
                {
                    "type": "MemoryPressure",
                    "status": "False",
                    "reason": "KubeletHasSufficientMemory",
                    "message": "kubelet has sufficient memory available",
                    "lastHeartbeatTime": "2024-06-01T10:00:00Z",
                    "lastTransitionTime": "2024-06-01T09:00:00Z",
                },
            ],
        },
    }


def namespace(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _template(app: str) -> Manifest:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": app, "image": f"registry.test/{app}:1"}]},
    }


def _controlled_by(owner: Manifest) -> list[Manifest]:
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def replica_set(name: str, namespace: str, replicas: int, *, owner: Manifest | None = None) -> Manifest:
    """A ReplicaSet; `owner` (a created Deployment) controls it."""
    meta: Manifest = {"name": name, "namespace": namespace}
    if owner is not None:
        meta["ownerReferences"] = _controlled_by(owner)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


def stateful_set(name: str, namespace: str, replicas: int) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
        },
    }


def deployment(name: str, namespace: str, replicas: int) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


def daemon_set(name: str, namespace: str) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


def pod(name: str, namespace: str, *, node: str = "", app: str = "", owner: Manifest | None = None) -> Manifest:
    meta: Manifest = {"name": name, "namespace": namespace, "labels": {"app": app or name}}
    if owner is not None:
        meta["ownerReferences"] = _controlled_by(owner)
    spec: Manifest = {"containers": [{"name": "main", "image": "registry.test/app:1"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


RUNNING_READY: Manifest = {
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-06-01T10:00:00Z"}],
    }
}
RUNNING_NOT_READY: Manifest = {
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2024-06-01T10:00:00Z"}],
    }
}


def budget(name: str, namespace: str, app: str, **limits: int | str) -> Manifest:
    """A PodDisruptionBudget; limits: minAvailable= or maxUnavailable=."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": app}}, **limits},
    }
