"""Kubeconfig files: the admin's, each component's, and a node's, each with a client
certificate issued by the cluster CA and pointing at the cluster's API server."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import yaml

from tke.internal.provider.kube.pki import CertificateAuthority, KeyPair

# (file name, common name, organizations) of the control plane's kubeconfigs.
COMPONENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin.conf", "kubernetes-admin", ("system:masters",)),
    ("controller-manager.conf", "system:kube-controller-manager", ()),
    ("scheduler.conf", "system:kube-scheduler", ()),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cluster_name: str, server: str, ca_pem: bytes, user: str, client: KeyPair) -> str:
    """A kubeconfig with one cluster, one user and one context, as YAML."""
    context = f"{user}@{cluster_name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(client.cert_pem), "client-key-data": _b64(client.key_pem)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def api_server_url(address: str, port: int = 6443) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


def component_kubeconfigs(ca: CertificateAuthority, cluster_name: str, server: str) -> dict[str, bytes]:
    out = {}
    for file, cn, orgs in COMPONENTS:
        pair = ca.issue(cn, orgs=orgs, client=True)
        out[file] = kubeconfig(cluster_name, server, ca.pair.cert_pem, cn, pair).encode()
    return out


def node_kubeconfig(ca: CertificateAuthority, cluster_name: str, server: str, node_name: str) -> bytes:
    """kubelet.conf of a node: user system:node:<name> in group system:nodes (the Node
    authorizer's convention)."""
    user = f"system:node:{node_name}"
    pair = ca.issue(user, orgs=("system:nodes",), client=True)
    return kubeconfig(cluster_name, server, ca.pair.cert_pem, user, pair).encode()


def servers_of(config: str) -> Sequence[str]:
    """The API server URLs a kubeconfig points at (for checks)."""
    doc = yaml.safe_load(config)
    return [c["cluster"]["server"] for c in doc.get("clusters", [])]


def ca_of(config: str) -> bytes | None:
    """The CA certificate (PEM) a kubeconfig trusts, or None when it does not parse."""
    try:
        doc = yaml.safe_load(config)
        return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None
