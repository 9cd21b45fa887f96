"""kubeadm-style configuration (ClusterConfiguration, InitConfiguration, JoinConfiguration)
and the kubelet's KubeletConfiguration, from the cluster spec, with the spec's per-component
extra args applied. Output is YAML documents as kubeadm reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tke.internal.provider.kube.pki import first_service_ip
from tke.platform.v1 import cluster_pb2

KUBEADM_API = "kubeadm.k8s.io/v1beta3"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"


def extra_args(cluster: cluster_pb2.Cluster, component: str) -> dict[str, str]:
    if component not in cluster.spec.extra_args:
        return {}
    return dict(sorted(cluster.spec.extra_args[component].args.items()))


def _version(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


def cluster_configuration(
    cluster: cluster_pb2.Cluster,
    control_plane_endpoint: str,
    cert_sans: Sequence[str] = (),
    pki_dir: str = "/etc/kubernetes/pki",
) -> dict[str, Any]:
    net = cluster.spec.network
    return {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "clusterName": cluster.metadata.name,
        "kubernetesVersion": _version(cluster.spec.version),
        "controlPlaneEndpoint": control_plane_endpoint,
        "certificatesDir": pki_dir,
        "networking": {
            "podSubnet": net.pod_cidr,
            "serviceSubnet": net.service_cidr,
            "dnsDomain": net.dns_domain or "cluster.local",
        },
        "apiServer": {"certSANs": list(cert_sans), "extraArgs": extra_args(cluster, "kube-apiserver")},
        "controllerManager": {"extraArgs": extra_args(cluster, "kube-controller-manager")},
        "scheduler": {"extraArgs": extra_args(cluster, "kube-scheduler")},
        "etcd": {"local": {"dataDir": "/var/lib/etcd", "extraArgs": extra_args(cluster, "etcd")}},
    }


KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"


def kube_proxy_configuration(cluster: cluster_pb2.Cluster) -> dict[str, Any]:
    """kube-proxy's KubeProxyConfiguration. kube-proxy takes no extra args through kubeadm:
    its `proxy-mode` extra arg becomes `mode`; every kube-proxy extra arg is also handed to the
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


def component_flags(cluster: cluster_pb2.Cluster, component: str) -> str:
    """A component's extra args as command-line flags ("--a=1 --b=2"), for commands that start
    it themselves."""
    return " ".join(f"--{k}={v}" for k, v in extra_args(cluster, component).items())


def kubelet_configuration(cluster: cluster_pb2.Cluster, pki_dir: str = "/etc/kubernetes/pki") -> dict[str, Any]:
    net = cluster.spec.network
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "authentication": {"x509": {"clientCAFile": f"{pki_dir}/ca.crt"}, "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [str(first_service_ip(net.service_cidr) + 9)],
        "clusterDomain": net.dns_domain or "cluster.local",
        "rotateCertificates": True,
    }


def node_registration(
    name: str,
    address: str,
    cluster: cluster_pb2.Cluster,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    args = {"node-ip": address, **extra_args(cluster, "kubelet")}
    if labels:
        args["node-labels"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return {"name": name, "kubeletExtraArgs": args, "taints": [dict(t) for t in taints]}


def init_configuration(
    name: str, address: str, cluster: cluster_pb2.Cluster, labels: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
        "nodeRegistration": node_registration(name, address, cluster, labels, []),
    }


def join_configuration(
    name: str,
    address: str,
    cluster: cluster_pb2.Cluster,
    api_endpoint: str,
    *,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {"file": {"kubeConfigPath": "/etc/kubernetes/bootstrap-kubelet.conf"}},
        "controlPlaneEndpoint": api_endpoint,
        "nodeRegistration": node_registration(name, address, cluster, labels, taints),
    }


def documents(*docs: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)
