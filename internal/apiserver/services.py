"""The gRPC servicers of tke.platform.v1: thin translations from request messages to the
shared ResourceAPI of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tke.internal.apiserver.api import ResourceAPI
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, machine_pb2, machine_pb2_grpc


def _field(request: Any, name: str) -> Any:
    return getattr(request, name) if request.HasField(name) else None


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, api: ResourceAPI[cluster_pb2.Cluster]) -> None:
        self.api = api

    async def Create(self, request: cluster_pb2.CreateClusterRequest, context: Any) -> cluster_pb2.Cluster:
        return await self.api.create(_field(request, "cluster"))

    async def Get(self, request: cluster_pb2.GetClusterRequest, context: Any) -> cluster_pb2.Cluster:
        return await self.api.get(request.name, request.tenant_id)

    async def List(self, request: cluster_pb2.ListClustersRequest, context: Any) -> cluster_pb2.ClusterList:
        page = await self.api.list(request.tenant_id, request.label_selector, request.page_size, request.continue_token)
        out = cluster_pb2.ClusterList(items=page.items)
        out.metadata.resource_version = str(page.revision)
        out.metadata.continue_token = page.continue_token
        return out

    async def Update(self, request: cluster_pb2.UpdateClusterRequest, context: Any) -> cluster_pb2.Cluster:
        return await self.api.update(request.cluster, request.update_mask)

    async def UpdateStatus(self, request: cluster_pb2.UpdateClusterStatusRequest, context: Any) -> cluster_pb2.Cluster:
        return await self.api.update_status(request.cluster)

    async def Delete(self, request: cluster_pb2.DeleteClusterRequest, context: Any) -> cluster_pb2.Cluster:
        return await self.api.delete(request.name, request.tenant_id, request.resource_version)

    async def Watch(
        self, request: cluster_pb2.WatchClustersRequest, context: Any
    ) -> AsyncIterator[cluster_pb2.ClusterEvent]:
        async for kind, obj in self.api.watch(request.tenant_id, request.label_selector, request.resource_version):
            yield cluster_pb2.ClusterEvent(type=kind, object=obj)  # type: ignore[arg-type]


class MachineService(machine_pb2_grpc.MachineServiceServicer):
    def __init__(self, api: ResourceAPI[machine_pb2.Machine]) -> None:
        self.api = api

    async def Create(self, request: machine_pb2.CreateMachineRequest, context: Any) -> machine_pb2.Machine:
        return await self.api.create(_field(request, "machine"))

    async def Get(self, request: machine_pb2.GetMachineRequest, context: Any) -> machine_pb2.Machine:
        return await self.api.get(request.name, request.tenant_id)

    async def List(self, request: machine_pb2.ListMachinesRequest, context: Any) -> machine_pb2.MachineList:
        cluster = request.cluster_name
        page = await self.api.list(
            request.tenant_id,
            request.label_selector,
            request.page_size,
            request.continue_token,
            (lambda m: m.spec.cluster_name == cluster) if cluster else None,
        )
        out = machine_pb2.MachineList(items=page.items)
        out.metadata.resource_version = str(page.revision)
        out.metadata.continue_token = page.continue_token
        return out

    async def Update(self, request: machine_pb2.UpdateMachineRequest, context: Any) -> machine_pb2.Machine:
        return await self.api.update(request.machine, request.update_mask)

    async def UpdateStatus(self, request: machine_pb2.UpdateMachineStatusRequest, context: Any) -> machine_pb2.Machine:
        return await self.api.update_status(request.machine)

    async def Delete(self, request: machine_pb2.DeleteMachineRequest, context: Any) -> machine_pb2.Machine:
        return await self.api.delete(request.name, request.tenant_id, request.resource_version)

    async def Watch(
        self, request: machine_pb2.WatchMachinesRequest, context: Any
    ) -> AsyncIterator[machine_pb2.MachineEvent]:
        cluster = request.cluster_name
        events = self.api.watch(
            request.tenant_id,
            request.label_selector,
            request.resource_version,
            (lambda m: m.spec.cluster_name == cluster) if cluster else None,
        )
        async for kind, obj in events:
            yield machine_pb2.MachineEvent(type=kind, object=obj)  # type: ignore[arg-type]
