"""The Kubernetes API of a cluster, as the providers' steps need it: a narrow seam, and its
implementation on the platform's access layer (tke.internal.provider.kube: lightkube).

Steps reach a cluster's API server through `ctx.tools.cluster_apis.connect(access)`, where
`access` (tke.internal.provider.kube.access.ClusterAccess) says where the server is and how to
log in: for the clusters the platform installs, the cluster's CA and a client certificate the
platform mints from it for each use (`admin_access`). What runs on the machines (kubeadm,
packages, files) goes over SSH instead.

Contract of a ClusterAPI:
- `ready()` returns the server's Kubernetes version without the "v" ("1.31.0") once /readyz
  passes, and raises TemporaryError while it does not (not answering, or naming the checks
  that fail).
- `node(name)` returns the Node object, or None when there is no such Node; what a Machine's
  status says about it is read from it by tke.internal.provider.kube.node_status.
- `drain(name, timeout)` cordons the node and evicts its pods through the Eviction API
  (PodDisruptionBudgets respected; DaemonSet pods and mirror pods left), raising
  TemporaryError, naming the pods that stayed and why, when `timeout` seconds pass first. A
  missing node is drained.
- `uncordon(name)` makes the node schedulable again; a missing node is fine.
- `delete_node(name)` deletes the Node object; a missing node is fine.
- `create_bootstrap_token(token, ttl_seconds, description)` stores a kubeadm bootstrap token
  (the Secret `kubeadm token create` makes, kube.config.bootstrap_token_secret), for nodes
  that join without the platform logging in to a master (cloud-init, hosted control planes).
- `apply(objects)` server-side applies manifests (dicts) as the platform's field manager:
  created when missing, changed only where they differ; applying the same again changes
  nothing (no new resource version, no new generation).
- `rollout(kind, namespace, name)` says how far a DaemonSet's or Deployment's pods are, from
  its status; None when there is no such object.
Every method may raise TemporaryError (unreachable, throttled) or PermanentError (refused
credentials, an untrusted server certificate, a server address the policy refuses), never a
library exception.

A ClusterAPIs layer connects to `access.server` through `access.addresses` when it is set (the
controller sets it for every cluster a tenant's object names): each connection to an address
the policy admitted from that connection's own lookup. kube.api.ClusterAPI does so by itself;
a layer built on it needs nothing more.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lightkube.resources.apps_v1 import DaemonSet, Deployment
from lightkube.resources.core_v1 import Node

from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube import api as kube_api
from tke.internal.provider.kube import drain as kube_drain
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.kube.config import bootstrap_token_secret, minor


@dataclass(frozen=True)
class Rollout:
    """A DaemonSet's or Deployment's pods, from its status: how many are wanted (a DaemonSet:
    the nodes it should run on), run the current template, are ready and available; and whether
    its controller has seen the current spec (status.observedGeneration)."""

    desired: int
    updated: int
    ready: int
    available: int
    observed: bool

    @property
    def done(self) -> bool:
        return self.observed and self.updated == self.desired and self.ready == self.desired == self.available

    @property
    def summary(self) -> str:
        if not self.observed:
            return "its controller has not seen the current spec yet"
        return f"{self.ready}/{self.desired} pods ready, {self.updated} updated, {self.available} available"


class ClusterAPI(Protocol):
    async def ready(self) -> str: ...
    async def node(self, name: str) -> Node | None: ...
    # The timeout bounds the whole drain (evictions wait on PodDisruptionBudgets), reported as
    # TemporaryError: a domain deadline, not a cancellation scope.
    async def drain(self, name: str, timeout: float) -> None: ...  # noqa: ASYNC109
    async def uncordon(self, name: str) -> None: ...
    async def delete_node(self, name: str) -> None: ...
    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None: ...
    async def apply(self, objects: Sequence[Mapping[str, Any]]) -> None: ...
    async def rollout(self, kind: str, namespace: str, name: str) -> Rollout | None: ...


class ClusterAPIs(Protocol):
    """Opens a ClusterAPI for the length of a block (its connections closed after)."""

    def connect(self, access: ClusterAccess) -> contextlib.AbstractAsyncContextManager[ClusterAPI]: ...


class KubeClusterAPI:
    """A ClusterAPI on one connection of the access layer."""

    def __init__(self, client: kube_api.ClusterAPI, drain_poll: float) -> None:
        self.client = client
        self.drain_poll = drain_poll

    async def ready(self) -> str:
        readiness = await self.client.readiness()
        if not readiness.ready:
            raise TemporaryError(f"{self.client.access.server}: the API server is {readiness.summary}")
        return await self.client.version()

    async def node(self, name: str) -> Node | None:
        return await self.client.node(name)

    async def drain(self, name: str, timeout: float) -> None:  # noqa: ASYNC109 - the Protocol's
        if await self.client.node(name) is not None:
            await kube_drain.drain(self.client, name, within=timeout, poll=self.drain_poll)

    async def uncordon(self, name: str) -> None:
        if await self.client.node(name) is not None:
            await self.client.set_unschedulable(name, False)

    async def delete_node(self, name: str) -> None:
        await self.client.delete_node(name)

    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None:
        await self.client.apply([bootstrap_token_secret(token, ttl_seconds, description)])

    async def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        await self.client.apply(objects)

    async def rollout(self, kind: str, namespace: str, name: str) -> Rollout | None:
        if kind == "DaemonSet":
            ds = await self.client.get(DaemonSet, name, namespace)
            if ds is None:
                return None
            st = ds.status
            if st is None:
                return Rollout(0, 0, 0, 0, observed=False)
            return Rollout(
                desired=st.desiredNumberScheduled,
                updated=st.updatedNumberScheduled or 0,
                ready=st.numberReady,
                available=st.numberAvailable or 0,
                observed=(st.observedGeneration or 0) >= (ds.metadata.generation or 0 if ds.metadata else 0),
            )
        if kind == "Deployment":
            d = await self.client.get(Deployment, name, namespace)
            if d is None:
                return None
            want = d.spec.replicas if d.spec is not None and d.spec.replicas is not None else 1
            dst = d.status
            if dst is None:
                return Rollout(want, 0, 0, 0, observed=False)
            return Rollout(
                desired=want,
                updated=dst.updatedReplicas or 0,
                ready=dst.readyReplicas or 0,
                available=dst.availableReplicas or 0,
                observed=(dst.observedGeneration or 0) >= (d.metadata.generation or 0 if d.metadata else 0),
            )
        raise ValueError(f"rollout of a {kind}: only DaemonSets and Deployments roll out")


class KubeClusterAPIs:
    """The controller's clusters' APIs, through lightkube (the default of tke-controller's
    `cluster_api`): each network step bounded by `timeout` seconds and each request by
    `request_timeout`, each response's body by `max_response_bytes` and each list by
    `max_list_items` (kube.api), evictions a budget refuses asked again every `drain_poll`
    seconds."""

    def __init__(
        self,
        timeout: float = 10.0,
        drain_poll: float = 1.0,
        max_response_bytes: int = kube_api.MAX_RESPONSE_BYTES,
        max_list_items: int = kube_api.MAX_LIST_ITEMS,
        request_timeout: float = kube_api.REQUEST_TIMEOUT,
    ) -> None:
        self.timeout = timeout
        self.drain_poll = drain_poll
        self.max_response_bytes = max_response_bytes
        self.max_list_items = max_list_items
        self.request_timeout = request_timeout

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[KubeClusterAPI]:
        async with kube_api.ClusterAPI(
            access,
            timeout=self.timeout,
            max_response_bytes=self.max_response_bytes,
            max_list_items=self.max_list_items,
            request_timeout=self.request_timeout,
        ) as client:
            yield KubeClusterAPI(client, self.drain_poll)


# The platform's identity in the clusters it installs. kubeadm (1.29 and later) binds the group
# kubeadm:cluster-admins to cluster-admin through RBAC; older clusters only know system:masters.
PLATFORM_USER = "tke:platform"
ACCESS_LIFETIME = datetime.timedelta(hours=1)


def admin_access(server: str, ca: pki.CertificateAuthority, version: str) -> ClusterAccess:
    """Access as the platform, with a client certificate valid for an hour: a key that leaks
    from a process's memory expires quickly, and nothing long-lived is stored anywhere."""
    group = "kubeadm:cluster-admins" if minor(version) >= (1, 29) else "system:masters"
    pair = ca.issue(PLATFORM_USER, orgs=(group,), client=True, lifetime=ACCESS_LIFETIME)
    return ClusterAccess(server, ca_pem=ca.pair.cert_pem, client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem)
