"""kubeadm's configuration documents and the kubelet's and kube-proxy's, from the cluster spec.

kubeadm reads InitConfiguration and ClusterConfiguration (kubeadm init), JoinConfiguration
(kubeadm join, for workers and for control-plane machines), and the component configurations
KubeletConfiguration (kubelet.config.k8s.io/v1beta1) and KubeProxyConfiguration
(kubeproxy.config.k8s.io/v1alpha1) beside them. The kubeadm API version follows the cluster's
Kubernetes version: kubeadm.k8s.io/v1beta4 from 1.31 (extraArgs are lists of {name, value},
ClusterConfiguration has proxy and encryptionAlgorithm, timeouts moved to `timeouts`), and
v1beta3 below (extraArgs are maps). Only fields of the reference documentation of each
version are written (tests/support/kubeadm_reference.py holds those field lists and the tests
check every document against them). Output is YAML documents as kubeadm reads them.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tke.internal.provider.kube.pki import first_service_ip
from tke.platform.v1 import cluster_pb2

KUBEADM_V1BETA3 = "kubeadm.k8s.io/v1beta3"
KUBEADM_V1BETA4 = "kubeadm.k8s.io/v1beta4"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
# The group kubeadm's bootstrap tokens authenticate as (its RBAC lets them join nodes).
BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"


def minor(version: str) -> tuple[int, int]:
    """(1, 31) for "1.31.2" or "v1.31.0-rc.1"."""
    parts = version.lstrip("v").split(".")
    return int(parts[0]), int(parts[1].split("-")[0])


def kubeadm_api(version: str) -> str:
    return KUBEADM_V1BETA4 if minor(version) >= (1, 31) else KUBEADM_V1BETA3


def kubernetes_version(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


def extra_args(cluster: cluster_pb2.Cluster, component: str) -> dict[str, str]:
    if component not in cluster.spec.extra_args:
        return {}
    return dict(sorted(cluster.spec.extra_args[component].args.items()))


def _args(api: str, args: Mapping[str, str]) -> Any:
    """Extra args in the API's shape: a map (v1beta3), a list of {name, value} (v1beta4)."""
    if api == KUBEADM_V1BETA3:
        return dict(args)
    return [{"name": k, "value": v} for k, v in args.items()]


def component_flags(cluster: cluster_pb2.Cluster, component: str) -> str:
    """A component's extra args as command-line flags ("--a=1 --b=2"), for commands that start
    it themselves."""
    return " ".join(f"--{k}={v}" for k, v in extra_args(cluster, component).items())


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Node:
    """A machine as kubeadm registers it."""

    name: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    control_plane: bool = False
    ignore_preflight_errors: Sequence[str] = ()


@dataclass(frozen=True)
class BootstrapToken:
    token: str  # [a-z0-9]{6}.[a-z0-9]{16}
    ttl_seconds: float
    description: str


def node_registration(api: str, cluster: cluster_pb2.Cluster, node: Node) -> dict[str, Any]:
    args = {"node-ip": node.address, **extra_args(cluster, "kubelet")}
    if node.labels:
        args["node-labels"] = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
    # Taints are written out, never left unset: unset means "the control-plane taint" to
    # kubeadm, and an empty list means "none", so the document says which one is meant.
    taints = [dict(t) for t in node.taints]
    if node.control_plane and not any(t.get("key") == CONTROL_PLANE_TAINT["key"] for t in taints):
        taints.insert(0, dict(CONTROL_PLANE_TAINT))
    out: dict[str, Any] = {
        "name": node.name,
        "criSocket": CONTAINERD_SOCKET,
        "taints": taints,
        "kubeletExtraArgs": _args(api, dict(sorted(args.items()))),
    }
    if node.ignore_preflight_errors:
        out["ignorePreflightErrors"] = list(node.ignore_preflight_errors)
    return out


def cluster_configuration(
    cluster: cluster_pb2.Cluster,
    control_plane_endpoint: str,
    cert_sans: Sequence[str] = (),
    pki_dir: str = "/etc/kubernetes/pki",
    scheduler_config: str = "",
) -> dict[str, Any]:
    """kubeadm's ClusterConfiguration. `scheduler_config` is the path of a
    KubeSchedulerConfiguration on every control-plane machine (the network add-on's extender):
    kube-scheduler gets it as --config, mounted read-only into its static pod, unless the
    cluster's own kube-scheduler extra args name a config."""
    api = kubeadm_api(cluster.spec.version)
    net = cluster.spec.network
    scheduler: dict[str, Any] = {}
    scheduler_args = extra_args(cluster, "kube-scheduler")
    if scheduler_config and "config" not in scheduler_args:
        scheduler_args = dict(sorted({**scheduler_args, "config": scheduler_config}.items()))
        scheduler["extraVolumes"] = [
            {
                "name": "tke-scheduler-config",
                "hostPath": scheduler_config,
                "mountPath": scheduler_config,
                "readOnly": True,
                "pathType": "File",
            }
        ]
    scheduler = {"extraArgs": _args(api, scheduler_args), **scheduler}
    doc: dict[str, Any] = {
        "apiVersion": api,
        "kind": "ClusterConfiguration",
        "clusterName": cluster.metadata.name,
        "kubernetesVersion": kubernetes_version(cluster.spec.version),
        "controlPlaneEndpoint": control_plane_endpoint,
        "certificatesDir": pki_dir,
        "networking": {
            "podSubnet": net.pod_cidr,
            "serviceSubnet": net.service_cidr,
            "dnsDomain": net.dns_domain or "cluster.local",
        },
        "apiServer": {
            "certSANs": list(dict.fromkeys(cert_sans)),
            "extraArgs": _args(api, extra_args(cluster, "kube-apiserver")),
        },
        "controllerManager": {"extraArgs": _args(api, extra_args(cluster, "kube-controller-manager"))},
        "scheduler": scheduler,
        "etcd": {"local": {"dataDir": "/var/lib/etcd", "extraArgs": _args(api, extra_args(cluster, "etcd"))}},
    }
    if api == KUBEADM_V1BETA4:
        # The platform's CAs are ECDSA P-256; kubeadm makes the leaf keys alike.
        doc["encryptionAlgorithm"] = "ECDSA-P256"
        doc["proxy"] = {}  # the kube-proxy add-on, enabled (a field the reference requires)
    return doc


def init_configuration(cluster: cluster_pb2.Cluster, node: Node, token: BootstrapToken) -> dict[str, Any]:
    """kubeadm init's own settings. The bootstrap token replaces the one kubeadm would make
    itself (valid a day): the platform's expires after its own TTL."""
    api = kubeadm_api(cluster.spec.version)
    return {
        "apiVersion": api,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": token.token,
                "description": token.description,
                "ttl": _duration(token.ttl_seconds),
                "usages": ["signing", "authentication"],
                "groups": [BOOTSTRAP_GROUP],
            }
        ],
        "localAPIEndpoint": {"advertiseAddress": node.address, "bindPort": 6443},
        "nodeRegistration": node_registration(api, cluster, node),
    }


@dataclass(frozen=True)
class Discovery:
    """Token discovery: where the API server is, the token, and the CA's public key pin."""

    api_server_endpoint: str
    token: str
    ca_cert_hashes: Sequence[str]


def join_configuration(
    cluster: cluster_pb2.Cluster, node: Node, discovery: Discovery, pki_dir: str = "/etc/kubernetes/pki"
) -> dict[str, Any]:
    """kubeadm join's settings, for a worker or (node.control_plane) another control-plane
    machine. The control-plane endpoint comes from the cluster itself (kubeadm reads its
    ClusterConfiguration from the kubeadm-config ConfigMap), so it is not repeated here."""
    api = kubeadm_api(cluster.spec.version)
    doc: dict[str, Any] = {
        "apiVersion": api,
        "kind": "JoinConfiguration",
        "caCertPath": f"{pki_dir}/ca.crt",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": discovery.api_server_endpoint,
                "token": discovery.token,
                "caCertHashes": list(discovery.ca_cert_hashes),
            }
        },
        "nodeRegistration": node_registration(api, cluster, node),
    }
    if node.control_plane:
        doc["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": node.address, "bindPort": 6443}}
    return doc


def kubelet_configuration(
    cluster: cluster_pb2.Cluster, pki_dir: str = "/etc/kubernetes/pki", *, fail_swap_on: bool = True
) -> dict[str, Any]:
    net = cluster.spec.network
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "authentication": {
            "x509": {"clientCAFile": f"{pki_dir}/ca.crt"},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "containerRuntimeEndpoint": CONTAINERD_SOCKET,
        "clusterDNS": [str(first_service_ip(net.service_cidr) + 9)],
        "clusterDomain": net.dns_domain or "cluster.local",
        "failSwapOn": fail_swap_on,
        "rotateCertificates": True,
        "serverTLSBootstrap": False,
        "staticPodPath": "/etc/kubernetes/manifests",
    }


def kube_proxy_configuration(cluster: cluster_pb2.Cluster) -> dict[str, Any]:
    """kube-proxy's KubeProxyConfiguration. kubeadm passes kube-proxy no extra args: its
    `proxy-mode` extra arg becomes `mode`; every kube-proxy extra arg is also handed to the
    operator's commands as flags (TKE_KUBE_PROXY_ARGS, see component_flags)."""
    doc: dict[str, Any] = {
        "apiVersion": KUBE_PROXY_API,
        "kind": "KubeProxyConfiguration",
        "clusterCIDR": cluster.spec.network.pod_cidr,
    }
    mode = extra_args(cluster, "kube-proxy").get("proxy-mode")
    if mode:
        doc["mode"] = mode
    return doc


def bootstrap_token_secret(token: str, ttl_seconds: float, description: str) -> dict[str, Any]:
    """The Secret `kubeadm token create` stores for a bootstrap token (kube-system,
    bootstrap-token-<id>, type bootstrap.kubernetes.io/token): the API server authenticates
    the token from it, as a member of kubeadm's node-joining group, until it expires."""
    token_id, _, secret = token.partition(".")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl_seconds)
    data = {
        "token-id": token_id,
        "token-secret": secret,
        "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": BOOTSTRAP_GROUP,
        "description": description,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def documents(*docs: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)
