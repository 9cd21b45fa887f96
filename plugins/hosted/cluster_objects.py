"""The objects kubeadm init would have made in the cluster's own API, made by the platform
instead: no kubeadm init runs for a hosted control plane, yet `kubeadm join` on every worker
reads them. As kubeadm's phases name them:

- bootstrap-token: cluster-info (kube-public) with a kubeconfig of the endpoint and the cluster
  CA, readable anonymously (Role and RoleBinding kubeadm:bootstrap-signer-clusterinfo), which
  kube-controller-manager's bootstrapsigner signs for every bootstrap token (the JWS that
  token discovery checks); the bindings that let a bootstrap token's group create the node's
  certificate request and have it approved (kubeadm:kubelet-bootstrap,
  kubeadm:node-autoapprove-bootstrap), nodes renew theirs
  (kubeadm:node-autoapprove-certificate-rotation), and join look for a Node of its name
  (kubeadm:get-nodes);
- upload-config: kubeadm-config (the ClusterConfiguration join reads) and kubelet-config (the
  KubeletConfiguration every kubelet gets) in kube-system, each readable by the bootstrap
  tokens' group and by nodes;
- the binding of kubeadm's admin group (kubeadm:cluster-admins) to cluster-admin (1.29 and
  later), the platform's identity in its clusters (clusterapi.admin_access);
- the kube-proxy add-on: its ServiceAccount, ConfigMap (KubeProxyConfiguration, and a
  kubeconfig with the endpoint and the in-cluster token), DaemonSet and RBAC.

Every object carries the platform's managed-by label and is applied with server-side apply, so
applying again changes nothing. CoreDNS is not installed (see docs/providers.md).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import yaml

from tke.internal.provider.endpoint import Endpoint
from tke.internal.provider.kube import config as kubecfg
from tke.platform.v1 import cluster_pb2
from tke.plugins.hosted import naming

RBAC = "rbac.authorization.k8s.io"
NODES = "system:nodes"
CLUSTER_INFO = "cluster-info"
KUBEADM_CONFIG = "kubeadm-config"
KUBELET_CONFIG = "kubelet-config"
KUBE_PROXY = "kube-proxy"
ADMINS = "kubeadm:cluster-admins"


def _labels() -> dict[str, str]:
    # Only the managed-by label: the cluster's own API holds one cluster's objects.
    return {naming.MANAGED_BY: naming.PLATFORM}


def _meta(name: str, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels()}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _group(name: str) -> dict[str, str]:
    return {"kind": "Group", "apiGroup": RBAC, "name": name}


def _cluster_binding(name: str, role: str, subjects: Sequence[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


def _readable(name: str, namespace: str, configmap: str, subjects: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """A Role that lets `subjects` get one ConfigMap, and its RoleBinding (kubeadm's pattern)."""
    role = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": _meta(name, namespace),
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [configmap], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
        "subjects": list(subjects),
    }
    return [role, binding]


def _configmap(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace), "data": data}


def cluster_info_kubeconfig(endpoint: Endpoint, ca_pem: bytes) -> str:
    """cluster-info's kubeconfig: one cluster (the endpoint, the CA), no user, as kubeadm
    writes it (the bootstrapsigner signs exactly this text)."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "", "cluster": {"certificate-authority-data": base64.b64encode(ca_pem).decode(),
                                     "server": endpoint.url}}
        ],
        "contexts": None,
        "current-context": "",
        "preferences": {},
        "users": None,
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)


def bootstrap(cluster: cluster_pb2.Cluster, endpoint: Endpoint, ca_pem: bytes) -> list[dict[str, Any]]:
    """What join reads and the RBAC it needs (kubeadm's bootstrap-token and upload-config
    phases), and the admin group's binding."""
    joiners = _group(kubecfg.BOOTSTRAP_GROUP)
    out: list[dict[str, Any]] = [
        _configmap(CLUSTER_INFO, "kube-public", {"kubeconfig": cluster_info_kubeconfig(endpoint, ca_pem)}),
        *_readable(
            "kubeadm:bootstrap-signer-clusterinfo",
            "kube-public",
            CLUSTER_INFO,
            [{"kind": "User", "apiGroup": RBAC, "name": "system:anonymous"}],
        ),
        _cluster_binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", [joiners]),
        _cluster_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            [joiners],
        ),
        _cluster_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            [_group(NODES)],
        ),
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": _meta("kubeadm:get-nodes"),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        },
        _cluster_binding("kubeadm:get-nodes", "kubeadm:get-nodes", [joiners]),
        _configmap(
            KUBEADM_CONFIG,
            "kube-system",
            {"ClusterConfiguration": kubecfg.documents(kubecfg.cluster_configuration(cluster, endpoint.address))},
        ),
        *_readable("kubeadm:nodes-kubeadm-config", "kube-system", KUBEADM_CONFIG, [joiners, _group(NODES)]),
        _configmap(
            KUBELET_CONFIG, "kube-system", {"kubelet": kubecfg.documents(kubecfg.kubelet_configuration(cluster))}
        ),
        *_readable("kubeadm:kubelet-config", "kube-system", KUBELET_CONFIG, [joiners, _group(NODES)]),
    ]
    if kubecfg.minor(cluster.spec.version) >= (1, 29):
        out.append(_cluster_binding(ADMINS, "cluster-admin", [_group(ADMINS)]))
    return out


def kube_proxy(cluster: cluster_pb2.Cluster, endpoint: Endpoint, image: str) -> list[dict[str, Any]]:
    """kubeadm's kube-proxy add-on: a DaemonSet on every node, reaching the API servers at the
    endpoint with its ServiceAccount's token."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {
                    "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                    "server": endpoint.url,
                },
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "namespace": "default", "user": "default"}}],
        "current-context": "default",
        "users": [{"name": "default", "user": {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}],
    }
    proxy_config = dict(kubecfg.kube_proxy_configuration(cluster))
    proxy_config["clientConnection"] = {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"}
    selector = {"k8s-app": KUBE_PROXY}
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {**_meta(KUBE_PROXY, "kube-system"), "labels": {**_labels(), **selector}},
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": KUBE_PROXY,
                    "priorityClassName": "system-node-critical",
                    "hostNetwork": True,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": KUBE_PROXY,
                            "image": image,
                            "command": [
                                "/usr/local/bin/kube-proxy",
                                "--config=/var/lib/kube-proxy/config.conf",
                                "--hostname-override=$(NODE_NAME)",
                            ],
                            "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                            "securityContext": {"privileged": True},
                            "volumeMounts": [
                                {"name": KUBE_PROXY, "mountPath": "/var/lib/kube-proxy"},
                                {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                                {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": KUBE_PROXY, "configMap": {"name": KUBE_PROXY}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(KUBE_PROXY, "kube-system")},
        _cluster_binding(
            "kubeadm:node-proxier",
            "system:node-proxier",
            [{"kind": "ServiceAccount", "name": KUBE_PROXY, "namespace": "kube-system"}],
        ),
        *_readable(KUBE_PROXY, "kube-system", KUBE_PROXY, [_group(kubecfg.BOOTSTRAP_GROUP)]),
        _configmap(
            KUBE_PROXY,
            "kube-system",
            {"config.conf": kubecfg.documents(proxy_config), "kubeconfig.conf": yaml.safe_dump(kubeconfig)},
        ),
        daemonset,
    ]
