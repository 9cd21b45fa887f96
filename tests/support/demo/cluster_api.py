"""The controller's ClusterAPIs (tke.internal.provider.clusterapi) over the platform's
Kubernetes access layer (tke.internal.provider.kube: lightkube, the Eviction API drain, Node
reports), for the demo's tke-controller: `[cluster_api] plugin =
"tests.support.demo.cluster_api:KubeClusterAPIs"`.

It stands in until tke-controller ships such a plugin of its own; then the demo configures
that one instead and this module goes. Nothing here is a fake: every call goes over HTTPS to
the cluster's API server (in the demo, the Kubernetes API stand-in behind the VIP)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from lightkube.resources.core_v1 import Node

from tke.internal.provider import clusterapi
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube import access, api, drain


def node_status(node: Node) -> clusterapi.NodeStatus:
    meta, status = node.metadata, node.status
    info = status.nodeInfo if status else None
    return clusterapi.NodeStatus(
        name=(meta.name if meta else "") or "",
        kubelet_version=(info.kubeletVersion if info else "") or "",
        os_image=(info.osImage if info else "") or "",
        kernel_version=(info.kernelVersion if info else "") or "",
        container_runtime_version=(info.containerRuntimeVersion if info else "") or "",
        architecture=(info.architecture if info else "") or "",
        machine_id=(info.machineID if info else "") or "",
        system_uuid=(info.systemUUID if info else "") or "",
        boot_id=(info.bootID if info else "") or "",
        addresses=tuple((a.type, a.address) for a in (status.addresses if status else None) or []),
        conditions=tuple(
            clusterapi.NodeCondition(c.type, c.status, c.reason or "", c.message or "")
            for c in (status.conditions if status else None) or []
        ),
        unschedulable=bool(node.spec and node.spec.unschedulable),
    )


class KubeClusterAPI:
    def __init__(self, client: api.ClusterAPI) -> None:
        self.client = client

    async def ready(self) -> str:
        readiness = await self.client.readiness()
        if not readiness.ready:
            raise TemporaryError(f"{self.client.access.server}: {readiness.summary}")
        return "v" + await self.client.version()

    async def node_status(self, name: str) -> clusterapi.NodeStatus | None:
        node = await self.client.node(name)
        return None if node is None else node_status(node)

    async def drain(self, name: str, timeout: float) -> None:  # noqa: ASYNC109 - the Protocol's
        if await self.client.node(name) is not None:
            await drain.drain(self.client, name, within=timeout)

    async def uncordon(self, name: str) -> None:
        if await self.client.node(name) is not None:
            await self.client.set_unschedulable(name, False)

    async def delete_node(self, name: str) -> None:
        await self.client.delete_node(name)


class KubeClusterAPIs:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    @contextlib.asynccontextmanager
    async def connect(self, target: clusterapi.ClusterAccess) -> AsyncIterator[KubeClusterAPI]:
        how = access.ClusterAccess(
            target.server,
            ca_pem=target.ca_pem,
            client_cert_pem=target.client_cert_pem,
            client_key_pem=target.client_key_pem,
        )
        async with api.ClusterAPI(how, timeout=self.timeout) as client:
            yield KubeClusterAPI(client)
