"""The Kubernetes API of a cluster, as the providers' steps need it: a narrow seam.

Steps reach a cluster's API server through `ClusterAPIs.connect(access)`, where `access` says
where the server is and how to log in (the cluster's CA and a client certificate the platform
mints from it, see `admin_access`). What runs on the machines (kubeadm, packages, files) goes
over SSH instead.

Contract of a ClusterAPI:
- `ready()` returns the server's version (gitVersion, "v1.31.0") once /readyz passes, and
  raises TemporaryError while it does not (not answering, not ready yet).
- `node_status(name)` returns what the Node reports, or None when there is no such Node.
- `drain(name, timeout)` cordons the node and evicts its pods through the Eviction API
  (PodDisruptionBudgets respected; DaemonSet pods and mirror pods left), raising
  TemporaryError when `timeout` seconds pass first. A missing node is drained.
- `uncordon(name)` makes the node schedulable again; a missing node is fine.
- `delete_node(name)` deletes the Node object; a missing node is fine.
- `create_bootstrap_token(token, ttl_seconds, description)` stores a kubeadm bootstrap token
  (the Secret `kubeadm token create` makes, kube.config.bootstrap_token_secret), for nodes
  that join without the platform logging in to a master (cloud-init).
Every method may raise TemporaryError (unreachable, throttled) or PermanentError (refused
credentials, an untrusted server certificate).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube import pki


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach one cluster's API server."""

    cluster: str  # the cluster's name, for messages
    server: str  # "https://10.0.0.10:6443"
    ca_pem: bytes  # the CA the server's certificate chains to
    client_cert_pem: bytes
    client_key_pem: bytes


@dataclass(frozen=True)
class NodeCondition:
    type: str
    status: str  # "True", "False", "Unknown"
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class NodeStatus:
    """What a Node object reports about its machine (status.nodeInfo, conditions, addresses)."""

    name: str
    kubelet_version: str = ""
    os_image: str = ""
    kernel_version: str = ""
    container_runtime_version: str = ""
    architecture: str = ""
    machine_id: str = ""
    system_uuid: str = ""
    boot_id: str = ""
    addresses: tuple[tuple[str, str], ...] = ()  # (type, address): ("InternalIP", "10.0.0.21")
    conditions: tuple[NodeCondition, ...] = field(default=())
    unschedulable: bool = False

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.conditions)


class ClusterAPI(Protocol):
    async def ready(self) -> str: ...
    async def node_status(self, name: str) -> NodeStatus | None: ...
    # The timeout bounds the whole drain (evictions wait on PodDisruptionBudgets), reported as
    # TemporaryError: a domain deadline, not a cancellation scope.
    async def drain(self, name: str, timeout: float) -> None: ...  # noqa: ASYNC109
    async def uncordon(self, name: str) -> None: ...
    async def delete_node(self, name: str) -> None: ...
    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None: ...


class ClusterAPIs(Protocol):
    """Opens a ClusterAPI for the length of a block (its connections closed after)."""

    def connect(self, access: ClusterAccess) -> contextlib.AbstractAsyncContextManager[ClusterAPI]: ...


class NoClusterAPIs:
    """Stands in until a Kubernetes API client is configured: every use is a temporary error
    that says so (the step is retried and the object does not fail for good)."""

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[ClusterAPI]:
        raise TemporaryError(f"cluster {access.cluster}: no Kubernetes API client is configured in tke-controller")
        yield  # pragma: no cover - unreachable; makes this an async generator


# The platform's identity in the clusters it installs. kubeadm (1.29 and later) binds the group
# kubeadm:cluster-admins to cluster-admin through RBAC; older clusters only know system:masters.
PLATFORM_USER = "tke:platform"
ACCESS_LIFETIME = datetime.timedelta(hours=1)


def admin_access(cluster_name: str, server: str, ca: pki.CertificateAuthority, version: str) -> ClusterAccess:
    """Access as the platform, with a client certificate valid for an hour: a key that leaks
    from a controller's memory expires quickly, and nothing long-lived is stored anywhere."""
    group = "kubeadm:cluster-admins" if _minor(version) >= (1, 29) else "system:masters"
    pair = ca.issue(PLATFORM_USER, orgs=(group,), client=True, lifetime=ACCESS_LIFETIME)
    return ClusterAccess(cluster_name, server, ca.pair.cert_pem, pair.cert_pem, pair.key_pem)


def _minor(version: str) -> tuple[int, int]:
    parts = version.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)
