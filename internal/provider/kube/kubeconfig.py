"""Kubeconfig files with a client certificate issued by the cluster CA, pointing at the
cluster's API server (kubeadm writes the components' own; the platform writes these for its
users)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import yaml

from tke.internal.provider.kube.pki import KeyPair


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
